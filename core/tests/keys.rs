//! The keyring file: generation, rotation, and refusal of bad files with clear messages.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use strongbox_core::chunk::{Header, Opener, Sealer};
use strongbox_core::files::Overwrite;
use strongbox_core::keys::Keyring;

fn write(dir: &tempfile::TempDir, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
    let p = dir.path().join(name);
    fs::write(&p, text).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    p
}

const GOOD: &str = "0707070707070707070707070707070707070707070707070707070707070707";

#[test]
fn generated_file_round_trips_with_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.key");
    let mut ring = Keyring::default();
    ring.rotate().unwrap();
    ring.save(&path, Overwrite::Refuse).unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let loaded = Keyring::load(&path).unwrap();
    assert_eq!(loaded.ids().collect::<Vec<_>>(), vec![1]);
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains("[[key]]") && text.contains("id = 1"));
    // Same keys after the round trip: a chunk sealed before opens after.
    let keys = ring.current_service_keys("s").unwrap();
    let sealed = Sealer::new(Some(3)).unwrap().seal(&keys, b"data").unwrap();
    let keys2 = loaded.current_service_keys("s").unwrap();
    assert_eq!(
        Opener::new()
            .unwrap()
            .open(&keys2, &sealed.id, &sealed.bytes)
            .unwrap(),
        b"data"
    );
    let err = ring.save(&path, Overwrite::Refuse).unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
}

#[test]
fn rotation_seals_with_the_newest_and_opens_the_old() {
    let mut ring = Keyring::default();
    ring.rotate().unwrap();
    let old_keys = ring.current_service_keys("s").unwrap();
    let old = Sealer::new(Some(3))
        .unwrap()
        .seal(&old_keys, b"old data")
        .unwrap();
    assert_eq!(ring.rotate().unwrap(), 2);
    let new_keys = ring.current_service_keys("s").unwrap();
    assert_eq!(new_keys.key_id(), 2);
    let header = Header::parse(&old.bytes).unwrap();
    let keys = ring.service_keys(header.key_id, "s").unwrap();
    assert_eq!(
        Opener::new()
            .unwrap()
            .open(&keys, &old.id, &old.bytes)
            .unwrap(),
        b"old data"
    );
}

#[test]
fn per_service_keys_differ() {
    let ring = common::keyring();
    let a = ring.current_service_keys("a").unwrap();
    let b = ring.current_service_keys("b").unwrap();
    assert_ne!(a.chunk_id(b"x"), b.chunk_id(b"x"));
}

#[test]
fn bad_files_are_refused_with_a_message_that_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "mode",
            format!("[[key]]\nid = 1\nsecret = \"{GOOD}\"\n"),
            0o644,
            "chmod 600",
        ),
        (
            "short",
            "[[key]]\nid = 1\nsecret = \"0707\"\n".to_string(),
            0o600,
            "2 bytes long; a fleet key is exactly 32 bytes",
        ),
        (
            "long",
            format!("[[key]]\nid = 1\nsecret = \"{GOOD}00\"\n"),
            0o600,
            "33 bytes long",
        ),
        (
            "noid",
            format!("[[key]]\nsecret = \"{GOOD}\"\n"),
            0o600,
            "key entry 1 has no id",
        ),
        (
            "nosecret",
            "[[key]]\nid = 4\n".to_string(),
            0o600,
            "key 4 has no secret",
        ),
        (
            "dup",
            format!("[[key]]\nid = 1\nsecret = \"{GOOD}\"\n[[key]]\nid = 1\nsecret = \"{GOOD}\"\n"),
            0o600,
            "two keys have id 1",
        ),
        ("empty", String::new(), 0o600, "holds no [[key]] entry"),
        (
            "nothex",
            "[[key]]\nid = 1\nsecret = \"zz\"\n".to_string(),
            0o600,
            "not hex",
        ),
        (
            "garbage",
            "\u{1}\u{2} not toml".to_string(),
            0o600,
            "not a strongbox key file",
        ),
    ];
    for (name, text, mode, expect) in cases {
        let p = write(&dir, name, &text, mode);
        let err = Keyring::load(&p).unwrap_err().to_string();
        assert!(err.contains(expect), "{name}: {err}");
        assert!(
            err.contains(p.to_str().unwrap()),
            "{name}: the message names the file: {err}"
        );
        assert!(
            !err.contains(GOOD),
            "{name}: the secret leaked into the message"
        );
    }
    let missing = Keyring::load(&dir.path().join("absent"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("absent"), "{missing}");
}

#[test]
fn debug_output_never_shows_a_secret() {
    let ring = common::keyring();
    let text = format!("{ring:?} {:?}", ring.current_service_keys("s").unwrap());
    assert!(
        !text.contains("7, 7, 7") && !text.contains("0707"),
        "{text}"
    );
}
