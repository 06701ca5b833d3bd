//! The chunk pipeline on one core against zstd alone, on the same data in the same run.
//!
//! Sealing (FastCDC chunking + keyed BLAKE3 id + zstd -3 + AES-256-GCM) is compared with
//! `zstd -3` streaming over the whole input; opening (AES-256-GCM + zstd decompression + id check)
//! with zstd decompression of that stream. Two inputs: a real `pg_dump --format=custom
//! --compress=0` of a pgbench database (started by the test harness), and a less compressible
//! text dump (random identifiers and numbers). Targets: sealing at least 70% of zstd's
//! throughput, opening at least 60% of zstd decompression's.
//!
//! Run with `cargo bench -p strongbox-benches --bench chunk_pipeline`. Environment:
//! `PGBENCH_SCALE` (default 10), `TEXT_MB` (default 128), `ROUNDS` (default 3).

use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use strongbox_core::chunk::{Opener, Sealer, DEFAULT_ZSTD_LEVEL};
use strongbox_core::chunking::chunk_slice;
use strongbox_core::keys::{FleetKey, Keyring, ServiceKeys};
use strongbox_core::manifest::ChunkRef;
use strongbox_integration::PgServer;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Keeps this thread on one CPU, so both sides of each ratio run on the same core.
fn pin_to_one_core() {
    // SAFETY: a zeroed cpu_set_t is valid; sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn pgbench_dump(scale: u32) -> Vec<u8> {
    let pg = PgServer::start().expect("start PostgreSQL");
    pg.pgbench_init("postgres", scale).expect("pgbench -i");
    let out = pg
        .client_command("pg_dump")
        .args(["--format=custom", "--compress=0", "postgres"])
        .output()
        .expect("run pg_dump");
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// SQL-like text with random identifiers and numbers: compresses about 2:1, not 10:1.
fn text_dump(len: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut out = Vec::with_capacity(len + 256);
    let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    while out.len() < len {
        let token: String = (0..24)
            .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
            .collect();
        writeln!(
            out,
            "INSERT INTO events VALUES ({}, '{}', {}.{:02}, '2026-{:02}-{:02} {:02}:{:02}:{:02}');",
            rng.gen::<u32>(),
            token,
            rng.gen_range(0..100_000),
            rng.gen_range(0..100),
            rng.gen_range(1..13),
            rng.gen_range(1..29),
            rng.gen_range(0..24),
            rng.gen_range(0..60),
            rng.gen_range(0..60)
        )
        .ok();
    }
    out.truncate(len);
    out
}

fn best_of<T>(rounds: u64, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..rounds {
        let t = Instant::now();
        let v = f();
        best = best.min(t.elapsed());
        last = Some(v);
    }
    (best, last.expect("at least one round"))
}

struct Sealed {
    chunks: Vec<(ChunkRef, Vec<u8>)>,
}

fn seal_all(keys: &ServiceKeys, data: &[u8]) -> Sealed {
    let mut sealer = Sealer::new(Some(DEFAULT_ZSTD_LEVEL)).expect("sealer");
    let chunks = chunk_slice(data)
        .map(|c| {
            let s = sealer.seal(keys, c).expect("seal");
            let r = ChunkRef {
                id: s.id.as_bytes().to_vec(),
                plain_size: s.plain_len as u64,
                stored_size: s.bytes.len() as u64,
            };
            (r, s.bytes)
        })
        .collect();
    Sealed { chunks }
}

fn open_all(keys: &ServiceKeys, sealed: &Sealed) -> usize {
    let mut opener = Opener::new().expect("opener");
    let mut total = 0;
    for (r, bytes) in &sealed.chunks {
        let id = strongbox_core::ids::ChunkId::from_slice(&r.id).expect("id");
        total += black_box(opener.open(keys, &id, bytes).expect("open")).len();
    }
    total
}

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn bench(name: &str, data: &[u8], rounds: u64) -> (f64, f64) {
    let ring = Keyring::new([FleetKey::from_bytes(1, [9u8; 32])]).expect("keyring");
    let keys = ring.current_service_keys("bench-service").expect("keys");

    let (t_zstd, compressed) = best_of(rounds, || {
        zstd::stream::encode_all(data, DEFAULT_ZSTD_LEVEL).expect("zstd")
    });
    let (t_seal, sealed) = best_of(rounds, || seal_all(&keys, data));
    let (t_unzstd, plain) = best_of(rounds, || {
        zstd::stream::decode_all(&compressed[..]).expect("unzstd")
    });
    assert_eq!(plain.len(), data.len());
    let (t_open, opened) = best_of(rounds, || open_all(&keys, &sealed));
    assert_eq!(opened, data.len());

    let stored: usize = sealed.chunks.iter().map(|(_, b)| b.len()).sum();
    let seal_ratio = t_zstd.as_secs_f64() / t_seal.as_secs_f64();
    let open_ratio = t_unzstd.as_secs_f64() / t_open.as_secs_f64();
    println!(
        "\n{name}: {:.1} MB in {} chunks",
        data.len() as f64 / 1e6,
        sealed.chunks.len()
    );
    println!(
        "  zstd -3 alone        {:>8.1} MB/s   compressed to {:>5.1}%",
        mbps(data.len(), t_zstd),
        100.0 * compressed.len() as f64 / data.len() as f64
    );
    println!(
        "  seal pipeline        {:>8.1} MB/s   stored as     {:>5.1}%   ratio {:.2} (target >= 0.70) {}",
        mbps(data.len(), t_seal),
        100.0 * stored as f64 / data.len() as f64,
        seal_ratio,
        if seal_ratio >= 0.70 { "ok" } else { "BELOW TARGET" }
    );
    println!(
        "  zstd -d alone        {:>8.1} MB/s",
        mbps(data.len(), t_unzstd)
    );
    println!(
        "  open pipeline        {:>8.1} MB/s                          ratio {:.2} (target >= 0.60) {}",
        mbps(data.len(), t_open),
        open_ratio,
        if open_ratio >= 0.60 { "ok" } else { "BELOW TARGET" }
    );
    breakdown(&keys, data, rounds);
    (seal_ratio, open_ratio)
}

/// Each stage of sealing alone, to see where the time goes.
fn breakdown(keys: &ServiceKeys, data: &[u8], rounds: u64) {
    let chunks: Vec<&[u8]> = chunk_slice(data).collect();
    let (t_cdc, n) = best_of(rounds, || chunk_slice(data).count());
    let (t_id, _) = best_of(rounds, || {
        chunks.iter().map(|c| keys.chunk_id(c)).collect::<Vec<_>>()
    });
    let (t_zstd, _) = best_of(rounds, || {
        let mut c = zstd::bulk::Compressor::new(DEFAULT_ZSTD_LEVEL).expect("zstd");
        chunks
            .iter()
            .map(|ch| c.compress(ch).expect("zstd").len())
            .sum::<usize>()
    });
    let mut plain_sealer = Sealer::new(None).expect("sealer");
    let ids: Vec<_> = chunks.iter().map(|c| keys.chunk_id(c)).collect();
    let (t_aes, _) = best_of(rounds, || {
        chunks
            .iter()
            .zip(&ids)
            .map(|(c, id)| plain_sealer.seal_with_id(keys, id, c).expect("seal").len())
            .sum::<usize>()
    });
    println!(
        "  stages alone (MB/s): chunking {:.0} ({n} chunks), id {:.0}, zstd per chunk {:.0}, encrypt {:.0}",
        mbps(data.len(), t_cdc),
        mbps(data.len(), t_id),
        mbps(data.len(), t_zstd),
        mbps(data.len(), t_aes)
    );
}

fn main() {
    // `cargo test --benches` runs bench binaries with no `--bench` flag: do a tiny smoke run then.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let rounds = if smoke { 1 } else { env_num("ROUNDS", 3) };
    let text_len = if smoke {
        8 << 20
    } else {
        (env_num("TEXT_MB", 128) as usize) << 20
    };
    let scale = if smoke {
        1
    } else {
        env_num("PGBENCH_SCALE", 10) as u32
    };

    let dump = pgbench_dump(scale);
    let text = text_dump(text_len);
    pin_to_one_core();
    println!("chunk pipeline vs zstd, one core, best of {rounds}");
    bench(
        &format!("pgbench dump (scale {scale}, pg_dump -Fc -Z0)"),
        &dump,
        rounds,
    );
    bench("text dump (random identifiers)", &text, rounds);
}
