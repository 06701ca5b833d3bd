#[derive(clap::Subcommand)]
pub enum Command {
    /// Nodes, their roles, the term, the leader, indexes and replication lag.
    Status,
    /// Add a node (started with the cluster's peers in its configuration) to the cluster.
    AddNode {
        /// The new node's Raft id.
        #[arg(long)]
        id: u64,
        /// Its gRPC address, HOST:PORT.
        #[arg(long)]
        address: String,
        /// The name in its certificate.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Remove a node from the cluster.
    RemoveNode {
        #[arg(long)]
        id: u64,
    },
}
