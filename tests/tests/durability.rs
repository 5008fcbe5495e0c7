//! Durability against the real binary (api.md "Durability (decided)"): what the
//! control plane acknowledged survives `kill -9` and a restart on the same
//! `--data-dir`; a full store refuses writes with 503 `STORE_UNAVAILABLE`, changes
//! nothing, and recovers once eviction frees room; a data directory it cannot use stops
//! it at start with a message that says what to do.
//!
//! The conservation test is the pattern Fission and Temporal back their durability
//! claims with: thousands of invocations from concurrent clients while the process is
//! killed at random moments, then an account of every one that was acknowledged. Its
//! size comes from `CONSERVATION_INVOCATIONS` and `CONSERVATION_KILLS`, its randomness
//! from `CONSERVATION_SEED` (printed, so a failing run replays its kills' schedule).

#[path = "durability/client.rs"]
mod client;
#[path = "durability/conservation.rs"]
mod conservation;
#[path = "e2e/processes.rs"]
mod processes;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use client::{Reply, call, execution, is_terminal, post, runtime_stats};
use conservation::{Config, FUNCTIONS, Invocation, Run};
use futures::StreamExt;
use processes::{ControlPlane, Runtime, eventually, eventually_within, run_to_exit};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

/// How long the executions of a conservation run may take to end after the clients
/// are done: a CI-sized run needs a few seconds (~400 end a second).
fn finish_bound(config: &Config) -> Duration {
    Duration::from_secs(60 + u64::try_from(config.invocations / 50).unwrap_or(u64::MAX))
}

/// The runtime's calls of one execution: `(attempt, Idempotency-Key)`.
fn calls_of(stats: &Value, id: &str) -> Vec<(u32, Option<String>)> {
    stats["calls"][id]
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .map(|call| {
                    let attempt = call["attempt"].as_str().and_then(|a| a.parse().ok());
                    let key = call["idempotencyKey"].as_str().map(str::to_owned);
                    (
                        attempt.unwrap_or_else(|| panic!("{id}: attempt of {call}")),
                        key,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    let reply = call(http.get(url)).await;
    assert_eq!(reply.status, StatusCode::OK, "GET {url}: {}", reply.body);
    reply.body
}

#[tokio::test]
async fn every_accepted_execution_survives_kill_9_and_ends_exactly_once() {
    let config = Config::from_env();
    println!(
        "conservation: CONSERVATION_SEED={} CONSERVATION_INVOCATIONS={} CONSERVATION_KILLS={} ({} clients)",
        config.seed, config.invocations, config.kills, config.clients
    );
    let began = Instant::now();
    let http = client::http();
    let data_dir = tempfile::tempdir().expect("a data directory");
    let dir = data_dir.path().to_str().expect("a UTF-8 path");
    let args = [
        "--data-dir",
        dir,
        "--admin-api",
        "--execution-ttl",
        "PT1H",
        "--idempotency-ttl",
        "PT1H",
    ];
    let (plane, runtime) = tokio::join!(ControlPlane::start(&args, &http), Runtime::start());
    let queue_size = config.invocations;
    for name in FUNCTIONS {
        let overrides = json!({"maxRetries": 10, "concurrency": 8, "queueSize": queue_size});
        let spec = client::pool_function(name, &runtime.endpoint(), &overrides);
        client::register(&http, &plane.api, &spec).await;
    }
    let functions = get_json(&http, &format!("{}/v1/functions", plane.api)).await;
    let config_url = format!("{}/v1/admin/runtime-config", plane.api);
    let revision = get_json(&http, &config_url).await["revision"].clone();
    let patch = json!({"expectedRevision": revision, "rateMaxPerSecond": 54_321});
    let patched = call(http.patch(&config_url).json(&patch)).await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    let runtime_config = get_json(&http, &config_url).await;
    assert_eq!(
        runtime_config["rateMaxPerSecond"], 54_321,
        "{runtime_config}"
    );

    let (publish, address) = watch::channel(Some(plane.api.clone()));
    let run = Run::new(config, &http, address);
    let mut rng = fastrand::Rng::with_seed(config.seed);
    let client_rngs: Vec<fastrand::Rng> = (0..config.clients).map(|_| rng.fork()).collect();
    let clients = futures::future::join_all(client_rngs.into_iter().map(|rng| run.client(rng)));
    let killer = run.killer(&publish, plane, &args, &mut rng);
    let (_, (plane, kills)) = tokio::join!(clients, killer);
    let enqueued_in = began.elapsed();

    // Let everything finish: every 202'd execution ends, and nothing is left queued or
    // running (the executions whose 202 was lost included).
    let bound = finish_bound(&config);
    let accepted = run.accepted.take();
    let tally = run.tally.take();
    let ids: Vec<String> = accepted.values().cloned().collect();
    let finals = client::until_all_terminal(&http, &plane.api, &ids, bound).await;
    eventually_within(bound, "no queued or running execution", || async {
        let mut left = 0.0;
        for gauge in ["function_queue_depth", "function_in_flight"] {
            left += client::gauge_sum(&http, &plane.management, gauge).await;
        }
        (left == 0.0).then_some(())
    })
    .await;
    let finished_in = began.elapsed();
    let stats = runtime_stats(&http, &runtime.url).await;
    let seen = stats["calls"].as_object().expect("calls per execution");

    // Every violation is collected, so that one run tells all it found.
    let mut problems = Vec::new();
    let mut problem = |text: String| {
        if problems.len() < 20 {
            problems.push(text);
        }
    };

    // Exactly one terminal state each (read twice: terminal never changes), with its
    // input's output.
    let distinct: BTreeSet<&String> = accepted.values().collect();
    if distinct.len() != accepted.len() {
        problem(format!(
            "{} 202s named {} executions",
            accepted.len(),
            distinct.len()
        ));
    }
    let again = client::until_all_terminal(&http, &plane.api, &ids, bound).await;
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    let mut retried = 0;
    for (&n, id) in &accepted {
        let invocation = Invocation::new(n);
        let record = &finals[id];
        let status = record["status"].as_str().unwrap_or("none");
        let code = record["error"]["code"].as_str().unwrap_or("");
        *states
            .entry(format!("{status} {code}").trim().to_owned())
            .or_default() += 1;
        let calls = calls_of(&stats, id);
        let attempt = record["attempt"].as_u64().unwrap_or(0);
        retried += usize::from(attempt > 1);
        let last_call = calls.iter().map(|(attempt, _)| u64::from(*attempt)).max();
        let explained = match status {
            "success" => {
                record["output"] == invocation.expected_output && last_call == Some(attempt)
            }
            "error" => code == "CONTROL_PLANE_RESTARTED",
            _ => false,
        };
        if !explained || record != &again[id] || record["functionName"] != invocation.function {
            problem(format!(
                "invocation {n}: {record}, read again {}, calls {calls:?}",
                again[id]
            ));
        }
    }

    // No (execution, attempt) dispatched twice; no key made two executions.
    let mut executions_of_key: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let (mut calls, mut skipped) = (0, 0);
    for id in seen.keys() {
        let of_id = calls_of(&stats, id);
        calls += of_id.len();
        let attempts: BTreeSet<u32> = of_id.iter().map(|(attempt, _)| *attempt).collect();
        if attempts.len() != of_id.len() {
            let state = &finals
                .get(id)
                .map_or("not accepted", |r| r["status"].as_str().unwrap_or(""));
            problem(format!(
                "{id} ({state}) got an attempt twice: {}",
                stats["calls"][id]
            ));
        }
        let highest = attempts.last().copied().unwrap_or(0) as usize;
        skipped += highest.saturating_sub(attempts.len());
        for (_, key) in of_id {
            if let Some(key) = key {
                executions_of_key.entry(key).or_default().insert(id.clone());
            }
        }
    }
    for (key, executions) in &executions_of_key {
        if executions.len() != 1 {
            let accepted = executions
                .iter()
                .map(|id| distinct.contains(id))
                .collect::<Vec<_>>();
            problem(format!(
                "key {key} made executions {executions:?} (accepted: {accepted:?})"
            ));
        }
    }
    let keyed: Vec<usize> = accepted
        .keys()
        .copied()
        .filter(|n| Invocation::new(*n).key.is_some())
        .collect();
    let replays: Vec<(usize, Reply)> = futures::stream::iter(&keyed)
        .map(|&n| {
            let invocation = Invocation::new(n);
            let (http, api) = (&http, &plane.api);
            async move {
                let key = invocation.key.as_deref();
                let reply = post(http, &invocation.url(api), &invocation.body, key).await;
                (n, reply.expect("the control plane answers"))
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for (n, reply) in replays {
        let key = Invocation::new(n).key.expect("keyed");
        let named = reply.body["executionId"].as_str().unwrap_or("");
        let seen_with = executions_of_key.get(&key);
        if reply.status != StatusCode::ACCEPTED
            || named != accepted[&n]
            || seen_with.is_some_and(|executions| !executions.contains(named))
        {
            problem(format!(
                "replay of {key} (202 named {}): {} {}, the runtime saw {seen_with:?}",
                accepted[&n], reply.status, reply.body
            ));
        }
    }

    // Executions whose 202 was lost in a kill: they ran, and ended, too.
    let orphans: Vec<String> = seen
        .keys()
        .filter(|id| !distinct.contains(id))
        .cloned()
        .collect();
    client::until_all_terminal(&http, &plane.api, &orphans, bound).await;

    // Functions and the runtime configuration as they were.
    let functions_now = get_json(&http, &format!("{}/v1/functions", plane.api)).await;
    if functions_now != functions {
        problem(format!(
            "the functions were {functions}, are {functions_now}"
        ));
    }
    let config_now = get_json(&http, &format!("{}/v1/admin/runtime-config", plane.api)).await;
    if config_now != runtime_config {
        problem(format!(
            "the runtime configuration was {runtime_config}, is {config_now}"
        ));
    }

    for (i, kill) in kills.iter().enumerate() {
        let [queued, redispatched, ended] = kill.restored;
        let start = kill
            .during_start
            .map_or(String::new(), |(delay, listening)| {
                format!(", its start killed too after {delay:?} (listening: {listening})")
            });
        println!(
            "  kill {} at {:?}, {} 202s{start}: back after {:?}; restored queued={queued} redispatched={redispatched} ended={ended}",
            i + 1,
            kill.at,
            kill.accepted,
            kill.down_for
        );
    }
    println!(
        "  clients: {} accepted ({} keyed); {tally:?}",
        accepted.len(),
        keyed.len()
    );
    println!("  ended: {states:?}; {retried} on attempt > 1");
    println!(
        "  runtime: {} executions, {calls} calls, {skipped} attempt numbers skipped (cut short by a kill); {} ran whose 202 was lost; {} keys seen",
        seen.len(),
        orphans.len(),
        executions_of_key.len()
    );
    println!(
        "  took {:?}: clients done at {enqueued_in:?}, everything ended at {finished_in:?}",
        began.elapsed()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        accepted.len() * 10 >= config.invocations * 9,
        "too few 202s to show anything: {}",
        accepted.len()
    );
}

/// The store's cap in the fault test: an empty database takes ~40 KiB, and a record
/// ~1.1 KiB with its ~1 KiB input or output, so ~150 executions fill it.
const STORE_MAX_BYTES: &str = "256KiB";

/// A ~1 KiB input.
fn padded(n: usize) -> Value {
    json!({"input": {"n": n, "pad": "x".repeat(1000)}})
}

/// Sends `body` (with `key`) until the answer is not 503 `STORE_UNAVAILABLE`, within
/// `bound`: that answer, and how many 503s came first.
async fn past_the_fault(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
    key: Option<&str>,
    bound: Duration,
) -> (Reply, usize) {
    let refusals = std::cell::Cell::new(0);
    let reply = eventually_within(bound, &format!("{url} to be taken again"), || async {
        let reply = post(http, url, body, key).await.expect("it answers");
        if reply.status != StatusCode::SERVICE_UNAVAILABLE {
            return Some(reply);
        }
        assert_eq!(reply.body["error"], "STORE_UNAVAILABLE", "{}", reply.body);
        refusals.set(refusals.get() + 1);
        None
    })
    .await;
    (reply, refusals.get())
}

#[tokio::test]
async fn a_full_store_answers_503_changes_nothing_and_recovers_once_eviction_frees_room() {
    let http = client::http();
    let runtime = Runtime::start().await;
    let data_dir = tempfile::tempdir().expect("a data directory");
    let dir = data_dir.path().to_str().expect("a UTF-8 path");
    // A finished record is kept 2 s: longer than the fill takes, so that only eviction
    // can end the fault.
    let args = [
        "--data-dir",
        dir,
        "--store-max-bytes",
        STORE_MAX_BYTES,
        "--execution-ttl",
        "PT2S",
    ];
    let mut plane = ControlPlane::start(&args, &http).await;
    let log = plane.take_log();
    let lines = RefCell::new(Vec::new());
    let (api, management) = (plane.api.clone(), plane.management.clone());
    let url = format!("{api}/v1/functions/filler:enqueue");
    let records = || client::gauge_sum(&http, &management, "execution_records");

    let body = async {
        let overrides = json!({"concurrency": 8, "queueSize": 10_000, "maxRetries": 1});
        let spec = client::pool_function("filler", &runtime.endpoint(), &overrides);
        client::register(&http, &api, &spec).await;

        // Enqueue (three in four keyed) from eight clients until they are refused.
        let next = std::cell::Cell::new(0_usize);
        let accepted = RefCell::new(Vec::new());
        let refused: RefCell<Vec<(usize, Reply)>> = RefCell::default();
        let fill = || async {
            while refused.borrow().is_empty() {
                let n = next.get();
                next.set(n + 1);
                assert!(n < 20_000, "{n} enqueues and the store is not full");
                let key = (!n.is_multiple_of(4)).then(|| format!("fill-{n}"));
                let reply = post(&http, &url, &padded(n), key.as_deref())
                    .await
                    .expect("the control plane answers");
                match reply.status {
                    StatusCode::ACCEPTED => accepted.borrow_mut().push(reply.execution_id()),
                    StatusCode::SERVICE_UNAVAILABLE => refused.borrow_mut().push((n, reply)),
                    other => panic!("enqueue {n}: {other} {}", reply.body),
                }
            }
        };
        futures::future::join_all((0..8).map(|_| fill())).await;
        // Concurrent requests are refused together when their group commit does not
        // fit; a lone one only when the store is full.
        loop {
            let n = next.get();
            next.set(n + 1);
            let reply = post(&http, &url, &padded(n), None)
                .await
                .expect("it answers");
            match reply.status {
                StatusCode::ACCEPTED => accepted.borrow_mut().push(reply.execution_id()),
                StatusCode::SERVICE_UNAVAILABLE => {
                    refused.borrow_mut().push((n, reply));
                    break;
                }
                other => panic!("enqueue {n}: {other} {}", reply.body),
            }
        }
        let full_with = records().await;
        let accepted = accepted.take();
        let refused = refused.take();
        println!(
            "store fault: {} enqueues accepted, then {} refused, at {STORE_MAX_BYTES} ({full_with} records)",
            accepted.len(),
            refused.len()
        );

        // The refusal: the contract's JSON, no execution named.
        for (n, reply) in &refused {
            assert_eq!(
                reply.body["error"], "STORE_UNAVAILABLE",
                "{n}: {}",
                reply.body
            );
            assert!(reply.body["message"].is_string(), "{}", reply.body);
            assert!(reply.body.get("executionId").is_none(), "{}", reply.body);
            assert!(!reply.headers.contains_key("x-execution-id"), "{n}");
            let content_type = &reply.headers["content-type"];
            assert_eq!(content_type, "application/json", "{n}");
        }
        // The server is up, and reads still answer.
        for health in [&management, &api] {
            let health = get_json(&http, &format!("{health}/actuator/health")).await;
            assert_eq!(health["status"], "UP", "{health}");
        }
        let functions = get_json(&http, &format!("{api}/v1/functions")).await;
        assert_eq!(functions[0]["name"], "filler", "{functions}");
        // The last execution accepted before the fault still reads back, and ends.
        let last = accepted.last().expect("some accepted").clone();
        eventually(&format!("{last} to end"), || async {
            let record = execution(&http, &api, &last).await;
            let record = record.unwrap_or_else(|| panic!("{last} is gone before it ended"));
            is_terminal(&record).then_some(())
        })
        .await;

        // Eviction of finished records past their TTL frees room: enqueues are taken
        // again.
        let fault_at = Instant::now();
        let bound = Duration::from_secs(30);
        let (probes, squeezed_in) = (std::cell::Cell::new(0), RefCell::new(Vec::new()));
        let (probe, recovered_with) = eventually_within(bound, "a 202 again", || async {
            probes.set(probes.get() + 1);
            let probe = padded(100_000 + probes.get());
            let reply = post(&http, &url, &probe, None).await.expect("it answers");
            match reply.status {
                StatusCode::SERVICE_UNAVAILABLE => None,
                StatusCode::ACCEPTED => {
                    let left = records().await;
                    if left < full_with {
                        return Some((reply.execution_id(), left));
                    }
                    // Room a completion freed, not eviction: the store is not over it.
                    squeezed_in.borrow_mut().push(reply.execution_id());
                    None
                }
                other => panic!("probe: {other} {}", reply.body),
            }
        })
        .await;
        let squeezed_in = squeezed_in.take();
        println!(
            "store fault: enqueue answered 202 again after {:?} and {} probes ({} squeezed in before), with {recovered_with} records left",
            fault_at.elapsed(),
            probes.get(),
            squeezed_in.len()
        );
        // A refused keyed request left no claim behind: sent again, it is a new one.
        let mut fresh = squeezed_in;
        fresh.push(probe);
        for (n, _) in refused.iter().filter(|(n, _)| !n.is_multiple_of(4)) {
            let key = format!("fill-{n}");
            let (reply, _) = past_the_fault(&http, &url, &padded(*n), Some(&key), bound).await;
            assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
            assert!(
                !accepted.contains(&reply.execution_id()),
                "{key} named an old one"
            );
            fresh.push(reply.execution_id());
        }

        // Everything accepted ran and ended; nothing else ran.
        let everything: BTreeSet<String> = accepted.iter().chain(&fresh).cloned().collect();
        let stats = eventually_within(bound, "every execution to run", || {
            let (http, runtime, everything) = (&http, &runtime.url, &everything);
            async move {
                let stats = runtime_stats(http, runtime).await;
                let calls = stats["calls"].as_object().expect("calls");
                let all_ran = everything.iter().all(|id| calls.contains_key(id));
                (all_ran && stats["inFlight"] == 0).then_some(stats)
            }
        })
        .await;
        for id in stats["calls"].as_object().expect("calls").keys() {
            assert!(everything.contains(id), "{id} ran but was never accepted");
        }
        eventually_within(bound, "every record to end", || {
            let (http, api, everything) = (&http, &api, &everything);
            async move {
                for id in everything {
                    // Gone is ended and evicted (past its TTL).
                    if execution(http, api, id)
                        .await
                        .is_some_and(|r| !is_terminal(&r))
                    {
                        return None;
                    }
                }
                Some(())
            }
        })
        .await;
        // Then eviction empties the store: a record left behind would be one whose
        // request was refused (and a restart would run it).
        let what = "the store to hold no record, a refused one included";
        eventually_within(bound, what, || async {
            (records().await == 0.0).then_some(())
        })
        .await;
    };
    tokio::select! {
        biased;
        () = body => {}
        () = client::drain(log, &lines) => unreachable!("drain never ends"),
    }
    let lines = lines.take();
    let mentions = |what: &str| lines.iter().filter(|line| line.contains(what)).count();
    println!(
        "store fault: its log: {} refused requests, {} refused records not removed, {} failed evictions, {} record updates tried again, {} lines in all",
        mentions("request failed inside the control plane"),
        mentions("refused execution could not be removed yet"),
        mentions("could not be evicted"),
        mentions("execution record update failed"),
        lines.len()
    );

    // Nothing half-written was kept: after a kill -9 and a restart, nothing unfinished.
    plane.kill().await;
    let plane = ControlPlane::start(&args, &http).await;
    let opened = plane
        .startup_log()
        .iter()
        .find(|line| line.contains("store open"))
        .expect("a store open line");
    for key in ["queued", "redispatched", "ended"] {
        assert_eq!(client::log_count(opened, key), Some(0), "{key}: {opened}");
    }
    let url = format!("{}/v1/functions/filler:enqueue", plane.api);
    let bound = Duration::from_secs(30);
    let (probe, _) = past_the_fault(&http, &url, &padded(0), None, bound).await;
    assert_eq!(probe.status, StatusCode::ACCEPTED, "{}", probe.body);
}

#[tokio::test]
async fn a_data_dir_it_cannot_use_stops_the_start_with_what_to_do() {
    // A database file that is not one: 4 KiB of junk.
    let data_dir = tempfile::tempdir().expect("a data directory");
    let database = data_dir.path().join("control-plane.sqlite3");
    let mut rng = fastrand::Rng::with_seed(7);
    let junk: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(4096).collect();
    std::fs::write(&database, &junk).expect("junk written");
    let dir = data_dir.path().to_str().expect("a UTF-8 path");
    let (status, log) = run_to_exit(&["--data-dir", dir]).await;
    assert!(!status.success(), "{status}: {log}");
    assert!(
        log.contains("restore it from a backup or move it away"),
        "{log}"
    );
    assert!(log.contains("control-plane.sqlite3"), "{log}");
    assert!(!log.contains("control plane listening"), "{log}");
    let kept = std::fs::read(&database).expect("still there");
    assert_eq!(kept, junk, "the damaged file was changed");

    // A data directory that is a regular file.
    let file = data_dir.path().join("a-file");
    std::fs::write(&file, "not a directory\n").expect("a file");
    let path = file.to_str().expect("a UTF-8 path");
    let (status, log) = run_to_exit(&["--data-dir", path]).await;
    assert!(!status.success(), "{status}: {log}");
    assert!(log.contains("choose another --data-dir"), "{log}");
    assert!(log.contains("a-file"), "{log}");
    assert!(!log.contains("control plane listening"), "{log}");
}
