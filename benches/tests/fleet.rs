//! The synthetic fleet at a small scale (issue 17, "what must hold"): driven through the real
//! apply path for longer than every retention window but the monthly and yearly ones, each
//! record kind stays within its bound, and the catalog stops growing once the windows are
//! full. `fleet_scale` runs the same at 10,000 services for 90 days.

use strongbox_benches::fleet::{FleetSim, Shape, DAY};
use strongbox_coordinator::catalog::{JOBS_KEPT_PER_SERVICE, JOB_KEEP_MS};

#[test]
fn a_small_fleet_stays_within_every_bound_and_stops_growing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let shape = Shape {
        hosts: 20,
        services_per_host: 3,
        schedule: "every 1h".into(),
        retention_every_hours: 6,
        retention_slice: 25,
    };
    let services = shape.services() as u64;
    let mut sim = FleetSim::new(dir.path(), shape);
    let mut daily: Vec<std::collections::BTreeMap<String, (u64, u64)>> = Vec::new();
    for _day in 0..40 {
        for _ in 0..24 {
            sim.hour();
        }
        daily.push(sim.counts());
    }
    let count = |day: usize, kind: &str| daily[day].get(kind).map_or(0, |c| c.0);
    // Every service backed up every hour.
    assert_eq!(sim.spent.commits, services * 40 * 24);
    // Bounds, by kind (ARCHITECTURE.md, "Bounds of the catalog").
    let last = daily.len() - 1;
    assert_eq!(count(last, "host/"), 20);
    assert_eq!(count(last, "service/"), services);
    assert!(
        count(last, "job/") <= services * JOBS_KEPT_PER_SERVICE as u64,
        "{} jobs",
        count(last, "job/")
    );
    // Kept by count here: 40 days is inside the age window.
    const { assert!(JOB_KEEP_MS > 40 * DAY) };
    // Default retention: 24 hourly, 30 daily, 12 monthly, 6 yearly; plus what accrued since
    // the last pass (6 hours) and the months begun.
    let backups = count(last, "backup/");
    assert!(
        backups <= services * (24 + 30 + 2 + 1 + 6),
        "{backups} backups for {services} services"
    );
    assert_eq!(count(last, "manifest/"), backups);
    assert_eq!(
        count(last, "audit/"),
        count(0, "audit/"),
        "only operators' changes are audited"
    );
    // Request ids: a week of commands, at most.
    let week_of_commands = services * 2 * 24 * 7 + 8 * 24 * 7 + 1000;
    assert!(
        count(last, "req/") <= week_of_commands,
        "{}",
        count(last, "req/")
    );
    // Once the daily window is full (day 31), the catalog stops growing: backups by at most
    // the monthly window's new month, jobs and requests not at all.
    for kind in ["job/", "req/", "jobs-finished/"] {
        assert!(
            count(last, kind) <= count(33, kind) + services,
            "{kind}: {} on day 34, {} on day 40",
            count(33, kind),
            count(last, kind)
        );
    }
    assert!(
        count(last, "backup/") <= count(33, "backup/") + 2 * services,
        "backups: {} on day 34, {} on day 40",
        count(33, "backup/"),
        count(last, "backup/")
    );
}
