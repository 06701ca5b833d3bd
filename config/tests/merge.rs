//! Flags over environment over file, option by option, and files written from the options
//! read back as the same options.

use std::time::Duration;

use clap::Parser;
use strongbox_config::{load, to_toml, AgentOptions, CoordinatorOptions};

#[derive(Parser)]
struct Node {
    #[command(flatten)]
    options: CoordinatorOptions,
}

#[derive(Parser)]
struct Agent {
    #[command(flatten)]
    options: AgentOptions,
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), text).unwrap();
    f
}

#[test]
fn a_flag_wins_over_its_variable_which_wins_over_the_file() {
    let f = file(
        "node_id = 1\nregion = \"from-file\"\nlisten = \"127.0.0.1:7001\"\n\
         gc_grace = \"2h\"\npeers = [\"2=127.0.0.2:7001\"]\n",
    );
    // SAFETY: this test binary runs one test per process (nextest), and only this test reads
    // these variables.
    unsafe {
        std::env::set_var("STRONGBOX_COORDINATOR_NODE_ID", "2");
        std::env::set_var("STRONGBOX_COORDINATOR_REGION", "from-env");
    }
    let flags = Node::try_parse_from(["node", "--region", "from-flag"])
        .unwrap()
        .options;
    let o = load(Some(f.path()), flags).unwrap();
    assert_eq!(o.region.as_deref(), Some("from-flag"), "flag over variable");
    assert_eq!(o.node_id, Some(2), "variable over file");
    assert_eq!(o.listen, Some("127.0.0.1:7001".parse().unwrap()), "file");
    assert_eq!(o.gc_grace, Some(Duration::from_secs(7200)));
    assert_eq!(o.peers, Some(vec!["2=127.0.0.2:7001".to_string()]));
    // A list given as a flag replaces the file's, never adds to it.
    let flags = Node::try_parse_from(["node", "--peer", "3=127.0.0.3:7001"])
        .unwrap()
        .options;
    let o = load(Some(f.path()), flags).unwrap();
    assert_eq!(o.peers, Some(vec!["3=127.0.0.3:7001".to_string()]));
}

#[test]
fn an_unknown_key_or_a_wrong_type_in_the_file_is_refused_with_its_line() {
    let flags = Node::try_parse_from(["node"]).unwrap().options;
    let f = file("node_id = 1\nlisen = \"127.0.0.1:7001\"\n");
    let e = load(Some(f.path()), flags.clone()).unwrap_err().to_string();
    assert!(e.contains("lisen") && e.contains("line 2"), "{e}");
    let f = file("node_id = \"one\"\n");
    let e = load(Some(f.path()), flags).unwrap_err().to_string();
    assert!(e.contains("node_id") || e.contains("line 1"), "{e}");
}

#[test]
fn options_written_as_a_file_read_back_the_same() {
    let node = CoordinatorOptions {
        node_id: Some(3),
        region: Some("test-1".into()),
        listen: Some("127.0.0.13:7443".parse().unwrap()),
        controller_interval: Some(Duration::from_millis(500)),
        schedule_backups: Some(false),
        peers: Some(vec!["1=127.0.0.11:7443".into()]),
        ..Default::default()
    };
    let f = file(&to_toml(&node).unwrap());
    let flags = Node::try_parse_from(["node"]).unwrap().options;
    assert_eq!(load(Some(f.path()), flags).unwrap(), node);

    let agent: AgentOptions = toml::from_str(
        "host = \"db-1\"\nspare = true\n[[service]]\nname = \"shop\"\nengine = \"sqlite\"\npath = \"/x/shop.db\"\n",
    )
    .unwrap();
    let text = to_toml(&agent).unwrap();
    let f = file(&text);
    let flags = Agent::try_parse_from(["agent"]).unwrap().options;
    let back = load(Some(f.path()), flags).unwrap();
    assert_eq!(to_toml(&back).unwrap(), text);
    assert_eq!(back.spare, Some(true));
    assert_eq!(back.services.unwrap()[0].name, "shop");
    // `--spare` alone is `true`, as before.
    let flags = Agent::try_parse_from(["agent", "--spare"]).unwrap().options;
    assert_eq!(flags.spare, Some(true));
}
