//! The ports' own rules, through the SQLite store: the registry, expiry, forgetting.

use super::*;

#[tokio::test]
async fn a_spec_reads_back_with_every_field_equal() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut every_field = function(
        json!({
            "name": "full", "image": "registry/img:1", "executionMode": "DEPLOYMENT",
            "runtimeMode": "STDIO", "endpointUrl": "https://svc.ns:8443/run", "timeoutMs": 1234,
            "concurrency": 7, "queueSize": 55, "maxRetries": 0, "command": ["sh", "-c", "run"],
            "env": {"A": "1", "B": ""}, "resources": {"cpu": "500m", "memory": "256Mi"},
            "runtimeCommand": "python main.py", "imagePullSecrets": ["pull"],
            "scalingConfig": {"strategy": "HPA", "minReplicas": 0, "maxReplicas": 5,
                "metrics": [{"type": "cpu", "target": "50"}, {"type": "rps", "target": "2.5"}]}
        }),
        ExecutionMode::Pool,
    );
    every_field.degradation_reason = Some("no provider can run it".into());
    every_field.replicas = Some(ReplicaTarget {
        desired: 3,
        pinned: true,
    });
    // Empty and partial values that are still values: [] and {} are kept, not dropped.
    let edges = function(
        json!({
            "name": "edges", "image": "i", "executionMode": "LOCAL", "resources": {},
            "imagePullSecrets": [], "runtimeCommand": "",
            "scalingConfig": {"strategy": "NONE", "metrics": []}
        }),
        ExecutionMode::Local,
    );
    let defaults = function(
        json!({"name": "defaults", "image": "i"}),
        ExecutionMode::Deployment,
    );
    for registered in [&every_field, &edges, &defaults] {
        store.register(registered.clone()).await.unwrap();
    }
    store.close().await;

    let store = open(&dir);
    let listed = store.list().await.unwrap();
    assert_eq!(
        listed,
        [defaults, edges, every_field.clone()],
        "sorted by name"
    );
    assert_eq!(
        FunctionRegistry::remove(&store, "full").await.unwrap(),
        Some(every_field)
    );
    assert_eq!(
        FunctionRegistry::remove(&store, "full").await.unwrap(),
        None
    );
}

#[tokio::test]
async fn the_registry_refuses_a_taken_name_and_replaces_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let first = function(
        json!({"name": "g", "image": "one"}),
        ExecutionMode::Deployment,
    );
    store.register(first).await.unwrap();
    let mut second = function(json!({"name": "g", "image": "two"}), ExecutionMode::Pool);
    assert_eq!(
        store.register(second.clone()).await,
        Err(AlreadyRegistered(FunctionName::parse("g").unwrap()).into())
    );
    store.replace(second.clone()).await.unwrap();
    assert_eq!(store.list().await.unwrap(), [second.clone()]);
    second.replicas = Some(ReplicaTarget {
        desired: 0,
        pinned: false,
    });
    store.replace(second.clone()).await.unwrap();
    assert_eq!(
        store.list().await.unwrap(),
        [second],
        "the replica target is kept"
    );
}

#[tokio::test]
async fn finished_records_drop_their_work_and_expire_after_the_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for name in ["a", "b", "live"] {
        store
            .insert(queued(name, 0), Durability::Committed)
            .await
            .unwrap();
    }
    assert!(!store.work_columns_are_null("a"));
    store
        .apply(
            &id("a"),
            finished(1, 10, Payload::string("x")),
            Durability::Committed,
        )
        .await
        .unwrap();
    store
        .apply(&id("b"), failed(1, 50), Durability::Committed)
        .await
        .unwrap();
    assert!(store.work_columns_are_null("a") && store.work_columns_are_null("b"));

    assert_eq!(evict(&store, t(500)).await.unwrap(), 0);
    assert_eq!(evict(&store, t(1_009)).await.unwrap(), 0);
    assert_eq!(evict(&store, t(1_010)).await.unwrap(), 1);
    assert!(store.get(&id("a")).await.unwrap().is_none());
    assert_eq!(evict(&store, t(100_000)).await.unwrap(), 1);
    assert!(store.get(&id("live")).await.unwrap().is_some());
    assert_eq!(records(&store), 1);
    assert!(ExecutionStore::remove(&store, &id("live")).await.unwrap());
    assert!(!ExecutionStore::remove(&store, &id("live")).await.unwrap());
    assert_eq!(records(&store), 0);
}

#[tokio::test]
async fn forgotten_and_expired_keys_stay_gone_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for (key, execution, at) in [
        ("forgotten", "e1", 0),
        ("expired", "e2", 0),
        ("kept", "e3", 500),
    ] {
        let ClaimOutcome::Acquired(token) = claim(&store, key, 1, at).await else {
            panic!("a free key");
        };
        store.publish(token, id(execution), t(at)).await.unwrap();
    }
    let ClaimOutcome::Acquired(token) = claim(&store, "abandoned", 1, 0).await else {
        panic!("a free key");
    };
    store.abandon(token).await;
    let forgotten = IdempotencyKey::new("forgotten");
    store.forget(&f(), &forgotten, &id("other")).await.unwrap();
    assert_eq!(
        claim(&store, "forgotten", 1, 1).await,
        ClaimOutcome::Existing(id("e1")),
        "it names another execution: kept"
    );
    store.forget(&f(), &forgotten, &id("e1")).await.unwrap();
    assert_eq!(
        IdempotencyStore::evict_expired(&store, t(1_000)).await,
        Ok(1),
        "only `expired`"
    );
    store.close().await;

    let store = SqliteStore::open(dir.path(), options(), t(900)).unwrap();
    for key in ["forgotten", "expired", "abandoned"] {
        assert!(
            matches!(claim(&store, key, 2, 900).await, ClaimOutcome::Acquired(_)),
            "{key}"
        );
    }
    assert_eq!(
        claim(&store, "kept", 1, 900).await,
        ClaimOutcome::Existing(id("e3"))
    );
}

#[tokio::test]
async fn the_configuration_is_saved_only_over_the_revision_it_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let config = |revision: u64, document: &str| StoredConfig {
        revision,
        document: document.to_owned(),
    };
    assert_eq!(store.load().await.unwrap(), None);
    assert!(
        !store.save(config(2, "{}"), 2).await.unwrap(),
        "nothing kept is revision 1"
    );
    assert!(store.save(config(2, "{}"), 1).await.unwrap());
    assert!(!store.save(config(2, "{\"late\":1}"), 1).await.unwrap());
    // Two changes written against one revision, in one group: the first one wins.
    let (first, second) = futures::join!(
        store.save(config(3, "{\"a\":1}"), 2),
        store.save(config(3, "{\"b\":1}"), 2),
    );
    assert_eq!((first, second), (Ok(true), Ok(false)));
    store.close().await;
    let store = open(&dir);
    assert_eq!(store.load().await.unwrap(), Some(config(3, "{\"a\":1}")));
}

#[tokio::test]
async fn functions_kept_by_the_first_schema_read_back_after_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(schema::DATABASE_FILE);
    let old = rusqlite::Connection::open(&path).unwrap();
    old.execute_batch(schema::MIGRATIONS[0]).unwrap();
    old.pragma_update(None, "application_id", schema::APPLICATION_ID)
        .unwrap();
    old.pragma_update(None, "user_version", 1).unwrap();
    old.execute(
        "INSERT INTO functions (name, spec, effective_mode, created_at) VALUES ('old', ?1, 'POOL', 7)",
        [r#"{"name":"old","image":"i","executionMode":"POOL","endpointUrl":"http://h/x"}"#],
    )
    .unwrap();
    drop(old);

    let store = open(&dir);
    let listed = store.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].spec.name.as_str(), "old");
    assert_eq!(listed[0].degradation_reason, None);
    assert_eq!(listed[0].replicas, None);
    let mut upgraded = listed[0].clone();
    upgraded.replicas = Some(ReplicaTarget {
        desired: 2,
        pinned: false,
    });
    store.replace(upgraded.clone()).await.unwrap();
    assert_eq!(store.list().await.unwrap(), [upgraded]);
}
