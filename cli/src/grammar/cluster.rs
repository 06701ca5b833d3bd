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
        /// The name in its certificate (`strongbox pki issue --role node --name NAME`).
        #[arg(long)]
        name: String,
    },
    /// Remove a node from the cluster.
    RemoveNode {
        /// The node's Raft id (`strongbox cluster status` lists them).
        #[arg(long)]
        id: u64,
    },
}
