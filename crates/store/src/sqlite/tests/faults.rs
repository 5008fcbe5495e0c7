//! What refuses to open, and what a full disk leaves behind.

use super::*;

#[test]
fn a_database_from_a_newer_control_plane_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir));
    let path = dir.path().join(schema::DATABASE_FILE);
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 7)
        .unwrap();
    let error = SqliteStore::open(dir.path(), options(), t(0)).unwrap_err();
    assert_eq!(
        error,
        OpenError::NewerSchema {
            path: path.clone(),
            found: 7,
            supported: 2
        }
    );
    assert_eq!(
        error.to_string(),
        format!(
            "{} was written by a newer control plane (schema 7, this one knows 2): run the \
             newer version, or point --data-dir elsewhere",
            path.display()
        )
    );
}

#[test]
fn a_file_that_is_not_a_sound_database_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(schema::DATABASE_FILE);
    let garbage: Vec<u8> = (0..4096u32).map(|n| (n * 7 + 3) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();
    let error = SqliteStore::open(dir.path(), options(), t(0)).unwrap_err();
    assert!(
        matches!(&error, OpenError::Corrupt { path: p, .. } if *p == path),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .ends_with("restore it from a backup or move it away to start empty"),
        "{error}"
    );

    // A real database with one of its pages overwritten.
    std::fs::remove_file(&path).unwrap();
    let store = open(&dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        for n in 0..200 {
            store
                .insert(queued(&format!("e{n}"), n), Durability::Committed)
                .await
                .unwrap();
        }
        store.close().await;
    });
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 4 * 4096, "the records take several pages");
    bytes[2 * 4096..3 * 4096].copy_from_slice(&garbage);
    std::fs::write(&path, &bytes).unwrap();
    let error = SqliteStore::open(dir.path(), options(), t(0)).unwrap_err();
    assert!(matches!(error, OpenError::Corrupt { .. }), "{error:?}");

    // Another program's database is not ours to write into.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(schema::DATABASE_FILE);
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE notes (text TEXT)")
        .unwrap();
    let error = SqliteStore::open(dir.path(), options(), t(0)).unwrap_err();
    assert!(matches!(error, OpenError::Corrupt { .. }), "{error:?}");
}

#[test]
fn a_directory_that_cannot_be_written_refuses_to_open() {
    // Tests run as root, whom permissions do not stop: a regular file where the
    // directory should be stops everyone.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    for path in [file.clone(), file.join("below")] {
        let error = SqliteStore::open(&path, options(), t(0)).unwrap_err();
        assert!(
            matches!(&error, OpenError::Unwritable { .. }),
            "{path:?}: {error:?}"
        );
        assert!(
            error
                .to_string()
                .ends_with("check its permissions and free space, or choose another --data-dir"),
            "{error}"
        );
    }
    // A directory where the database file should be.
    std::fs::create_dir(dir.path().join(schema::DATABASE_FILE)).unwrap();
    let error = SqliteStore::open(dir.path(), options(), t(0)).unwrap_err();
    assert!(matches!(error, OpenError::Unwritable { .. }), "{error:?}");
}

#[tokio::test]
async fn a_full_store_refuses_what_does_not_fit_and_recovers_when_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let capped = SqliteOptions {
        max_bytes: Some(160 * 1024),
        ..options()
    };
    let store = SqliteStore::open(dir.path(), capped, t(0)).unwrap();
    let text = |bytes: usize| Payload::string(&"x".repeat(bytes));
    // Finished records with large outputs: what eviction frees later.
    for n in 0..8 {
        let name = format!("old{n}");
        store
            .insert(queued(&name, 0), Durability::Committed)
            .await
            .unwrap();
        store
            .apply(
                &id(&name),
                finished(1, 0, text(6_000)),
                Durability::Committed,
            )
            .await
            .unwrap();
    }
    let mut filled = 0;
    let full = loop {
        assert!(filled < 1_000, "the cap never stopped a write");
        let name = format!("fill{filled}");
        match store
            .insert(execution(&name, 1, text(3_000)), Durability::Committed)
            .await
        {
            Ok(()) => filled += 1,
            Err(error) => break (name, error),
        }
    };
    assert!(filled > 0);
    let (name, error) = full;
    assert!(
        matches!(&error, InsertError::Unavailable(e) if e.0.contains("full")),
        "{error:?}"
    );
    assert!(store.get(&id(&name)).await.unwrap().is_none());

    // A group with one write too big: it is refused alone; the writes beside it that
    // fit (a change in place, a removal) are applied, one at a time.
    let (fill0, fill1) = (id("fill0"), id("fill1"));
    let release = store.hold();
    let (change, removed, big, ()) = futures::join!(
        store.apply(&fill0, started(1, 1, 2), Durability::Committed),
        ExecutionStore::remove(&store, &fill1),
        store.insert(execution("big", 2, text(100_000)), Durability::Committed),
        async { drop(release) },
    );
    assert!(change.is_ok(), "{change:?}");
    assert_eq!(removed, Ok(true));
    assert!(matches!(big, Err(InsertError::Unavailable(_))), "{big:?}");
    assert!(store.get(&id("big")).await.unwrap().is_none());
    assert!(store.get(&fill1).await.unwrap().is_none());
    let fill0 = store.get(&fill0).await.unwrap().unwrap();
    assert_eq!((fill0.state, fill0.version), (ExecutionState::Running, 1));
    assert_eq!(records(&store), 8 + filled - 1);

    // A key that cannot be written is not published: it is free again.
    let long_key = "k".repeat(20_000);
    let ClaimOutcome::Acquired(token) = claim(&store, &long_key, 1, 0).await else {
        panic!("a free key");
    };
    assert!(store.publish(token, id("fill2"), t(0)).await.is_err());
    assert!(matches!(
        claim(&store, &long_key, 1, 0).await,
        ClaimOutcome::Acquired(_)
    ));

    // Evicting the old records frees their pages for new writes.
    assert_eq!(evict(&store, t(5_000)).await.unwrap(), 8);
    store
        .insert(execution("after", 3, text(3_000)), Durability::Committed)
        .await
        .unwrap();
    store.close().await;

    // So does a bigger cap.
    let store = SqliteStore::open(dir.path(), options(), t(0)).unwrap();
    store
        .insert(execution("big", 4, text(100_000)), Durability::Committed)
        .await
        .unwrap();
    // Every fill but the one removed, "after" and "big".
    assert_eq!(store.unfinished().await.unwrap().len(), filled - 1 + 2);
}

#[tokio::test]
async fn a_database_file_moved_away_while_serving_refuses_writes_until_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store
        .insert(queued("before", 0), Durability::Committed)
        .await
        .unwrap();
    let file = store.path().to_path_buf();
    let away = dir.path().join("moved-away.sqlite3");
    std::fs::rename(&file, &away).unwrap();
    let refused = store
        .insert(queued("while-away", 1), Durability::Committed)
        .await;
    assert!(
        matches!(&refused, Err(InsertError::Unavailable(e)) if e.0.contains("was removed")),
        "{refused:?}"
    );
    // Another file in its place is not the store either.
    std::fs::write(&file, b"").unwrap();
    let refused = store
        .insert(queued("while-replaced", 1), Durability::Committed)
        .await;
    assert!(
        matches!(&refused, Err(InsertError::Unavailable(e)) if e.0.contains("replaced")),
        "{refused:?}"
    );
    std::fs::rename(&away, &file).unwrap();
    store
        .insert(queued("after", 2), Durability::Committed)
        .await
        .unwrap();
    store.close().await;
    let store = open(&dir);
    let names = unfinished_ids(&store).await;
    assert_eq!(
        names,
        ["before", "after"],
        "nothing half-written while it was away"
    );
}

#[tokio::test]
async fn eviction_keeps_the_file_from_growing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let output = Payload::string(&"o".repeat(300));
    let mut pages = Vec::new();
    for round in 0..10u64 {
        let at = round * 10_000;
        let names: Vec<String> = (0..500).map(|n| format!("r{round}-{n}")).collect();
        let inserts = names
            .iter()
            .map(|name| store.insert(queued(name, at), Durability::Committed));
        assert!(join_all(inserts).await.iter().all(Result::is_ok));
        let ids: Vec<ExecutionId> = names.iter().map(|name| id(name)).collect();
        let finishes = ids
            .iter()
            .map(|id| store.apply(id, finished(1, at, output.clone()), Durability::Committed));
        assert!(join_all(finishes).await.iter().all(Result::is_ok));
        assert_eq!(evict(&store, t(at + 1_000)).await.unwrap(), 500);
        pages.push(store.page_count());
    }
    assert_eq!(records(&store), 0);
    let settled = pages[1];
    assert!(
        pages[2..].iter().all(|&count| count <= settled),
        "freed pages are reused: {pages:?}"
    );
}

/// The ids of the unfinished executions the store holds, in their order.
async fn unfinished_ids(store: &SqliteStore) -> Vec<String> {
    let unfinished = store.unfinished().await.unwrap();
    unfinished
        .into_iter()
        .map(|e| e.record.id.to_string())
        .collect()
}

/// Sets or clears the immutable attribute of `files` (`chattr`, which even root cannot
/// write past); `false` where the filesystem or the system has no such attribute.
fn immutable(files: &[&std::path::Path], on: bool) -> bool {
    let flag = if on { "+i" } else { "-i" };
    std::process::Command::new("chattr")
        .arg(flag)
        .args(files)
        .status()
        .is_ok_and(|status| status.success())
}

#[tokio::test]
async fn a_database_made_read_only_while_serving_refuses_writes_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store
        .insert(queued("before", 0), Durability::Committed)
        .await
        .unwrap();
    let database = store.path().to_path_buf();
    let log = database.with_extension("sqlite3-wal");
    let files = [database.as_path(), log.as_path()];
    if !immutable(&files, true) {
        eprintln!("skipped: chattr +i is not available on this filesystem");
        return;
    }
    let refused = store
        .insert(queued("while-read-only", 1), Durability::Committed)
        .await;
    assert!(immutable(&files, false), "chattr -i works where +i did");
    assert!(
        matches!(&refused, Err(InsertError::Unavailable(_))),
        "{refused:?}"
    );
    assert!(
        store.get(&id("before")).await.unwrap().is_some(),
        "reads go on"
    );
    store
        .insert(queued("after", 2), Durability::Committed)
        .await
        .unwrap();
    store.close().await;
    let store = open(&dir);
    let names = unfinished_ids(&store).await;
    assert_eq!(names, ["before", "after"], "nothing of the refused write");
}
