//! Certificates that cannot work: the CLI says which, why and what to do, at once, instead of
//! retrying for half a minute and printing "transport error".

use std::time::Duration as StdDuration;

use strongbox_core::pki::{Role, Validity};
use strongbox_core::tls::TlsFiles;
use strongbox_integration::cluster::TestPki;
use strongbox_integration::fleet::{cli_as, fleet};
use time::{Duration, OffsetDateTime};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_or_future_certificate_is_named_with_its_dates() {
    let f = fleet().await;
    let now = OffsetDateTime::now_utc();
    let expired = f
        .cluster
        .pki
        .issue_valid(
            Role::Operator,
            "bob",
            &[],
            Validity {
                not_before: now - Duration::days(10),
                not_after: now - Duration::days(3),
            },
        )
        .unwrap();
    let out = cli_as(&f, &expired, &["cluster", "status"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    let day = (now - Duration::days(3)).date().to_string();
    assert!(
        err.contains("expired at") && err.contains(&day) && err.contains("3d"),
        "{err}"
    );
    assert!(
        err.contains("bob") && err.contains("issue a new one"),
        "{err}"
    );
    assert!(!err.contains("transport error"), "{err}");

    let future = f
        .cluster
        .pki
        .issue_valid(
            Role::Operator,
            "carol",
            &[],
            Validity {
                not_before: now + Duration::days(2),
                not_after: now + Duration::days(30),
            },
        )
        .unwrap();
    let out = cli_as(&f, &future, &["cluster", "status"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("not valid until") && err.contains("clock"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_certificate_or_ca_fails_the_handshake_with_the_reason() {
    let f = fleet().await;
    let foreign = TestPki::new().unwrap();

    // Mallory's certificate is of another CA (she trusts ours): every node would refuse it
    // after the handshake (seen as a broken pipe), so the CLI checks it first.
    let mallory = foreign.issue(Role::Operator, "mallory", &[]).unwrap();
    let mallory = TlsFiles {
        ca: f.operator.ca.clone(),
        ..mallory
    };
    let started = std::time::Instant::now();
    let out = cli_as(&f, &mallory, &["cluster", "status"]);
    let took = started.elapsed();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("not accepted by the fleet CA") && err.contains("issued by another CA"),
        "{err}"
    );
    assert!(!err.contains("transport error"), "{err}");
    // Not the 30 s of retries it was: once every node refused, it stops (a generous bound,
    // to catch a return of the retry loop, not to time the handshake).
    assert!(took < StdDuration::from_secs(20), "took {took:?}: {err}");

    // Our certificate, but another CA file: named before any node is dialed.
    let wrong_ca = TlsFiles {
        ca: foreign.dir().join("ca").join("ca.crt"),
        ..f.operator.clone()
    };
    let out = cli_as(&f, &wrong_ca, &["service", "list"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("not accepted by the fleet CA") && err.contains(wrong_ca.ca.to_str().unwrap()),
        "{err}"
    );

    // Files that are not there, or not files: the option and the file are named, once.
    let dir = tempfile::tempdir().unwrap();
    for (tls, flag, what) in [
        (
            TlsFiles {
                cert: "/nonexistent/alice.crt".into(),
                ..f.operator.clone()
            },
            "--tls-cert /nonexistent/alice.crt",
            "no such file",
        ),
        (
            TlsFiles {
                key: dir.path().to_path_buf(),
                ..f.operator.clone()
            },
            "--tls-key",
            "not a file",
        ),
    ] {
        let out = cli_as(&f, &tls, &["service", "list"]);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(err.contains(flag) && err.contains(what), "{err}");
        assert!(
            !err.contains("os error 2): No such file"),
            "said twice: {err}"
        );
    }

    // Our certificate with another holder's key: named, not a bare transport error.
    let other = f.cluster.pki.issue(Role::Operator, "dave", &[]).unwrap();
    let mismatched = TlsFiles {
        key: other.key.clone(),
        ..f.operator.clone()
    };
    let out = cli_as(&f, &mismatched, &["service", "list"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("does not go with the certificate")
            && err.contains(other.key.to_str().unwrap()),
        "{err}"
    );
}

#[test]
fn certificates_are_issued_for_at_least_a_day_and_at_most_a_century() {
    let dir = tempfile::tempdir().unwrap();
    let strongbox = strongbox_integration::cluster::workspace_bin("strongbox").unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(&strongbox)
            .args(args)
            .output()
            .unwrap()
    };
    let ca = dir.path().join("ca");
    let out = run(&["pki", "init-ca", "--dir", ca.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    for days in ["0", "99999999"] {
        let out = run(&[
            "pki",
            "issue",
            "--ca-dir",
            ca.to_str().unwrap(),
            "--role",
            "operator",
            "--name",
            "erin",
            "--out",
            dir.path().join("out").to_str().unwrap(),
            "--days",
            days,
        ]);
        assert!(!out.status.success(), "--days {days} was taken");
        let err = stderr(&out);
        assert!(
            err.contains("1..=36500") && !err.contains("panicked"),
            "{err}"
        );
    }
}

/// Issue 15, fault 6: a wrong address or another fleet's CA cost 31 s of silence and ended in
/// "tcp connect error" without the address. Each address is named with why, within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_or_untrusted_nodes_are_named_each_within_seconds() {
    let f = fleet().await;
    // Nothing listens at these addresses.
    let nobody: Vec<String> = (0..2)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        })
        .collect();
    let strongbox = strongbox_integration::cluster::workspace_bin("strongbox").unwrap();
    for args in [vec!["service", "list"], vec!["cluster", "status"]] {
        let started = std::time::Instant::now();
        let out = std::process::Command::new(&strongbox)
            .args(&args)
            .env("STRONGBOX_COORDINATORS", nobody.join(","))
            .env("STRONGBOX_TLS_CA", &f.operator.ca)
            .env("STRONGBOX_TLS_CERT", &f.operator.cert)
            .env("STRONGBOX_TLS_KEY", &f.operator.key)
            .output()
            .unwrap();
        let took = started.elapsed();
        assert!(!out.status.success());
        let err = stderr(&out);
        for a in &nobody {
            assert!(
                err.contains(a.as_str()),
                "{args:?} does not name {a}: {err}"
            );
        }
        assert!(err.contains("nothing listens there"), "{args:?}: {err}");
        // A generous bound (it was 31 s): a few seconds of retries at most.
        assert!(took < StdDuration::from_secs(15), "{args:?} took {took:?}");
    }

    // A node frozen with its port open (it accepts TCP, never answers TLS): the CLI moves on
    // to the next node, and alone it is named as not answering, within seconds.
    let frozen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let frozen_addr = frozen.local_addr().unwrap().to_string();
    let run = |addrs: String| {
        let started = std::time::Instant::now();
        let out = std::process::Command::new(&strongbox)
            .args(["service", "list"])
            .env("STRONGBOX_COORDINATORS", addrs)
            .env("STRONGBOX_TLS_CA", &f.operator.ca)
            .env("STRONGBOX_TLS_CERT", &f.operator.cert)
            .env("STRONGBOX_TLS_KEY", &f.operator.key)
            .output()
            .unwrap();
        (out, started.elapsed())
    };
    let (out, took) = run(format!("{frozen_addr},{}", f.cluster.addr(1)));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(took < StdDuration::from_secs(20), "took {took:?}");
    let (out, took) = run(frozen_addr.clone());
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&frozen_addr) && err.contains("no answer"),
        "{err}"
    );
    assert!(took < StdDuration::from_secs(20), "took {took:?}");
    drop(frozen);

    // Another fleet's operator (its certificate and CA agree, so the local check passes):
    // every node's certificate is refused here, named as a trust problem, not an outage.
    let other = TestPki::new().unwrap();
    let stranger = other.issue(Role::Operator, "frank", &[]).unwrap();
    let out = cli_as(&f, &stranger, &["service", "list"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("not signed by this fleet's CA")
            && err.contains(&f.cluster.addr(1).to_string()),
        "{err}"
    );
}
