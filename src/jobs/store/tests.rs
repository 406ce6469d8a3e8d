//! The store's own tests (SQLite): migrations of an old database, URLs, and every query.

use super::sql::rows;
use super::*;
use crate::runlog::MetricPoint;
use crate::Error;

fn job(id: &str, request_id: &str) -> JobRecord {
    JobRecord {
        id: id.into(),
        request_id: request_id.into(),
        name: "n".into(),
        state: JobState::Queued,
        device: "cpu".into(),
        submitted_spec: "s".into(),
        resolved_spec: "r".into(),
        created_ms: now_ms(),
        started_ms: None,
        finished_ms: None,
        last_error: String::new(),
        step: 0,
        total_steps: 10,
        steps_per_second: 0.0,
        last_seq: 0,
        restarts: 0,
        metrics: BTreeMap::new(),
        owner: String::new(),
        lease_until_ms: 0,
    }
}

#[test]
fn a_database_from_before_versioning_is_migrated_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    {
        // What the first released server created: migration 1's tables, no version table.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(migrations::SQLITE_MIGRATIONS[0])
            .unwrap();
        conn.execute(
            "INSERT INTO jobs (id, request_id, name, state, device, submitted_spec,
                resolved_spec, created_ms, total_steps, last_seq)
             VALUES ('old', '', 'n', 4, 'cpu', 's', 'r', 1, 10, 7)",
            [],
        )
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let old = store.job("old").unwrap();
    assert_eq!(
        (old.state, old.last_seq, old.owner.as_str()),
        (JobState::Completed, 7, "")
    );
    store.add_points("old", &[]).unwrap();
    assert_eq!(store.last_point("old").unwrap(), 0);
    drop(store);
    // Opening again applies nothing twice.
    let store = Store::open(&path).unwrap();
    let versions = store
        .with(|db| {
            rows(
                db,
                "SELECT version FROM schema_migrations ORDER BY version",
                &[],
                |r| r.int(0),
            )
        })
        .unwrap();
    assert_eq!(versions, [1, 2]);
}

#[test]
fn store_urls_parse_and_hide_passwords() {
    let dir = Path::new("/data");
    assert_eq!(
        StoreUrl::parse("sqlite", dir).unwrap(),
        StoreUrl::Sqlite(dir.join("noiseda.db"))
    );
    assert_eq!(
        StoreUrl::parse("sqlite:/x/jobs.db", dir).unwrap(),
        StoreUrl::Sqlite(PathBuf::from("/x/jobs.db"))
    );
    let pg = StoreUrl::parse("postgres://u:secret@db:5432/jobs", dir).unwrap();
    assert!(pg.is_shared());
    assert_eq!(pg.redacted(), "postgres://u:***@db:5432/jobs");
    for bad in ["mysql://x", "postgres://u:p@db:notaport/x"] {
        let e = StoreUrl::parse(bad, dir).unwrap_err().to_string();
        assert!(e.contains("--store"), "{e}");
    }
}

#[test]
/// ~140 lines: one store walked through a job's whole life, each step checked on the state
/// the step before left.
fn request_ids_pages_states_leases_points_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("jobs.db")).unwrap();
    assert!(store.insert(&job("a", "r1")).unwrap().1);
    let (again, new) = store.insert(&job("b", "r1")).unwrap();
    assert!(!new);
    assert_eq!(again.id, "a");
    for id in ["c", "d", "e"] {
        store.insert(&job(id, "")).unwrap();
    }
    let (page, next) = store.list(None, 3, None).unwrap();
    let ids: Vec<_> = page.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["e", "d", "c"]);
    let (page, next) = store.list(None, 3, next).unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, "a");
    assert_eq!(next, None);

    assert!(store
        .transition("c", JobState::Queued, JobState::Running)
        .unwrap());
    // A job no replica holds has owner "".
    assert!(store
        .finish("d", "", JobState::Failed, Some("boom"))
        .unwrap());
    let d = store.job("d").unwrap();
    assert_eq!((d.state, d.last_error.as_str()), (JobState::Failed, "boom"));
    assert!(d.finished_ms.is_some() && d.started_ms.is_none());
    assert!(store.job("c").unwrap().started_ms.is_some());
    let (failed, _) = store.list(Some(JobState::Failed), 10, None).unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(store.counts().unwrap()[&(JobState::Queued as i32)], 2);
    assert!(matches!(store.job("zz"), Err(Error::NotFound(_))));

    let ck = |step| CheckpointRecord {
        step,
        path: PathBuf::from(format!("/x/{step}")),
        saved_ms: 1,
        metrics: BTreeMap::from([("val/psnr".to_string(), step as f64)]),
    };
    store.add_checkpoint("c", &ck(10), &[]).unwrap();
    store.add_checkpoint("c", &ck(20), &[10]).unwrap();
    store.add_checkpoint("c", &ck(30), &[]).unwrap();
    let steps: Vec<u64> = store
        .checkpoints("c")
        .unwrap()
        .iter()
        .map(|c| c.step)
        .collect();
    assert_eq!(steps, [20, 30]);
    assert_eq!(store.checkpoints("c").unwrap()[1], ck(30));

    // Leases: claims take the oldest queued job on a listed device, once.
    let devices = ["cpu".to_string()];
    let claimed = store.claim("r1", &devices, 1_000).unwrap().unwrap();
    assert_eq!(
        (claimed.id.as_str(), claimed.state),
        ("a", JobState::Running)
    );
    assert_eq!(
        (claimed.owner.as_str(), claimed.lease_until_ms),
        ("r1", 1_000)
    );
    assert_eq!(store.claim("r2", &devices, 1_000).unwrap().unwrap().id, "e");
    assert!(store.claim("r2", &devices, 1_000).unwrap().is_none());
    assert!(store
        .claim("r2", &["cuda:0".to_string()], 1_000)
        .unwrap()
        .is_none());
    // Renewal is the owner's only; a lease that ran out is taken over exactly once.
    assert_eq!(store.renew("r2", &["a".into()], 5_000).unwrap(), vec![]);
    let held = store.renew("r1", &["a".into()], 2_000).unwrap();
    assert_eq!(held, vec![("a".to_string(), JobState::Running)]);
    assert!(store
        .transition("a", JobState::Running, JobState::Cancelling)
        .unwrap());
    assert!(!store
        .transition("a", JobState::Running, JobState::Cancelling)
        .unwrap());
    let expired: Vec<String> = store
        .expired(3_000)
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert!(expired.contains(&"a".to_string()) && expired.contains(&"e".to_string()));
    assert_eq!(
        store.take_over("a", 3_000, true, "n").unwrap(),
        Some(TakenOver::Cancelled)
    );
    assert_eq!(store.take_over("a", 3_000, true, "n").unwrap(), None);
    assert_eq!(
        store.take_over("e", 3_000, true, "back").unwrap(),
        Some(TakenOver::Requeued)
    );
    let e = store.job("e").unwrap();
    assert_eq!(
        (e.state, e.restarts, e.last_error.as_str()),
        (JobState::Queued, 1, "back")
    );
    let e = store.claim("r1", &devices, 9_000).unwrap().unwrap();
    assert!(!store.finish("e", "r2", JobState::Completed, None).unwrap());
    assert!(store
        .update_progress("e", "r1", &ProgressUpdate::default())
        .unwrap());
    assert!(!store
        .update_progress("e", "r2", &ProgressUpdate::default())
        .unwrap());
    assert!(store
        .finish(&e.id, "r1", JobState::Completed, None)
        .unwrap());
    assert_eq!(store.job("e").unwrap().owner, "");

    // Metric points: ordered by seq, a repeated seq keeps the first.
    let p = |seq, value| MetricPoint {
        seq,
        step: seq,
        wall: 0.5,
        series: "loss".into(),
        split: crate::runlog::Split::Train,
        value,
    };
    store.add_points("c", &[p(2, 2.0), p(1, 1.0)]).unwrap();
    store.add_points("c", &[p(2, 9.0), p(3, 3.0)]).unwrap();
    let got: Vec<(u64, f64)> = store
        .points("c", 2, 10)
        .unwrap()
        .iter()
        .map(|p| (p.seq, p.value))
        .collect();
    assert_eq!(got, [(2, 2.0), (3, 3.0)]);
    assert_eq!(store.last_point("c").unwrap(), 3);

    // Everything is on disk: a second connection (a restarted server) sees it.
    drop(store);
    let store = Store::open(&dir.path().join("jobs.db")).unwrap();
    assert_eq!(store.job("c").unwrap().state, JobState::Running);
    assert_eq!(store.counts().unwrap()[&(JobState::Running as i32)], 1);
}
