//! The conservation test's workload: the invocations the clients send, the clients
//! (which follow the control plane from address to address), and the killer (which
//! `kill -9`s it at random moments and starts it again on the same data directory).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::client::{self, log_count};
use crate::processes::{ControlPlane, eventually_within};

/// The functions of the mix, one per kind of completion.
pub(crate) const FUNCTIONS: [&str; 4] = ["echo", "slow", "flaky", "called-back"];

/// How long a client keeps trying one invocation (across restarts).
const PATIENCE: Duration = Duration::from_secs(60);

/// The size of the run, from the environment for a longer one on demand.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub(crate) invocations: usize,
    pub(crate) kills: usize,
    pub(crate) clients: usize,
    pub(crate) seed: u64,
}

impl Config {
    /// `CONSERVATION_INVOCATIONS` (default 3000), `CONSERVATION_KILLS` (default 4),
    /// `CONSERVATION_SEED` (default: a fresh one, printed).
    pub(crate) fn from_env() -> Self {
        let number = |name: &str, default: u64| match std::env::var(name) {
            Ok(text) => text
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("{name}={text}: {e}")),
            Err(_) => default,
        };
        let as_usize = |n: u64| usize::try_from(n).expect("fits");
        Self {
            invocations: as_usize(number("CONSERVATION_INVOCATIONS", 3000)).max(100),
            kills: as_usize(number("CONSERVATION_KILLS", 4)),
            clients: 24,
            seed: number("CONSERVATION_SEED", fastrand::u64(..)),
        }
    }
}

/// Invocation `n`: where it goes, what it sends and what its execution must return.
#[derive(Debug)]
pub(crate) struct Invocation {
    pub(crate) function: &'static str,
    /// The request body, `{"input": ..}`: unique per invocation.
    pub(crate) body: Value,
    pub(crate) expected_output: Value,
    /// One in four has an `Idempotency-Key`.
    pub(crate) key: Option<String>,
}

impl Invocation {
    pub(crate) fn new(n: usize) -> Self {
        let function = FUNCTIONS[n % FUNCTIONS.len()];
        let input = match function {
            "echo" => json!({"n": n}),
            "slow" => json!({"n": n, "mode": "sleep", "ms": 20}),
            "flaky" => json!({"n": n, "mode": "fail", "times": 1}),
            _ => json!({"n": n, "mode": "callback", "output": {"n": n, "via": "callback"}}),
        };
        let expected_output = if function == "called-back" {
            input["output"].clone()
        } else {
            input.clone()
        };
        let key = (n / FUNCTIONS.len())
            .is_multiple_of(4)
            .then(|| format!("conservation-{n}"));
        Self {
            function,
            body: json!({ "input": input }),
            expected_output,
            key,
        }
    }

    pub(crate) fn url(&self, api: &str) -> String {
        format!("{api}/v1/functions/{}:enqueue", self.function)
    }
}

/// What the clients did besides getting 202s.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Requests whose transport failed (no answer: the process died).
    pub(crate) transport_failures: usize,
    /// Keyed requests sent again (same key and body) after such a failure.
    pub(crate) keyed_retries: usize,
    /// Unkeyed requests sent again after one (a second execution, if the first was
    /// accepted after all: allowed, it has no key).
    pub(crate) unkeyed_retries: usize,
    /// Unkeyed requests given up after one.
    pub(crate) unkeyed_dropped: usize,
    /// 429s (sent again: a refusal leaves nothing behind).
    pub(crate) throttled: usize,
    /// The longest one request took, answered or not.
    pub(crate) slowest: Duration,
}

/// What one kill did.
#[derive(Debug)]
pub(crate) struct Kill {
    /// When, since the clients started.
    pub(crate) at: Duration,
    /// 202s the clients had when it landed.
    pub(crate) accepted: usize,
    /// A start killed too, after this long (and whether it had said it listens).
    pub(crate) during_start: Option<(Duration, bool)>,
    /// From the kill until the new process answered its health check.
    pub(crate) down_for: Duration,
    /// Its `store open` line: queued, redispatched and ended on restart.
    pub(crate) restored: [u64; 3],
}

/// The clients' shared state.
pub(crate) struct Run<'a> {
    pub(crate) config: Config,
    pub(crate) http: &'a reqwest::Client,
    /// The control plane's API address, `None` while it is down.
    pub(crate) address: watch::Receiver<Option<String>>,
    next: Cell<usize>,
    /// Clients that have sent all they had.
    done: Cell<usize>,
    /// Invocation number -> the execution id its 202 named.
    pub(crate) accepted: RefCell<BTreeMap<usize, String>>,
    pub(crate) tally: RefCell<Tally>,
}

impl<'a> Run<'a> {
    pub(crate) fn new(
        config: Config,
        http: &'a reqwest::Client,
        address: watch::Receiver<Option<String>>,
    ) -> Self {
        Self {
            config,
            http,
            address,
            next: Cell::new(0),
            done: Cell::new(0),
            accepted: RefCell::default(),
            tally: RefCell::default(),
        }
    }

    /// One client: takes the next invocation until there is none.
    pub(crate) async fn client(&self, mut rng: fastrand::Rng) {
        loop {
            let n = self.next.get();
            if n >= self.config.invocations {
                self.done.set(self.done.get() + 1);
                return;
            }
            self.next.set(n + 1);
            self.invoke(n, &mut rng).await;
        }
    }

    /// Sends invocation `n` until it gets a 202, or, unkeyed, until its transport
    /// fails and the coin says to give it up.
    async fn invoke(&self, n: usize, rng: &mut fastrand::Rng) {
        let invocation = Invocation::new(n);
        let deadline = Instant::now() + PATIENCE;
        let mut failed_on = None;
        loop {
            assert!(
                Instant::now() < deadline,
                "invocation {n} got no 202 within {PATIENCE:?}"
            );
            let api = self.api(failed_on.as_deref()).await;
            let sent_at = Instant::now();
            let sent = client::post(
                self.http,
                &invocation.url(&api),
                &invocation.body,
                invocation.key.as_deref(),
            )
            .await;
            let slowest = self.tally.borrow().slowest.max(sent_at.elapsed());
            self.tally.borrow_mut().slowest = slowest;
            match sent {
                Ok(reply) if reply.status == StatusCode::ACCEPTED => {
                    let id = reply.execution_id();
                    self.accepted.borrow_mut().insert(n, id);
                    return;
                }
                Ok(reply) if reply.status == StatusCode::TOO_MANY_REQUESTS => {
                    self.tally.borrow_mut().throttled += 1;
                    // Its Retry-After, shortened: the run must go on.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(reply) => panic!(
                    "invocation {n} ({}): {} {}",
                    invocation.function, reply.status, reply.body
                ),
                Err(_) => {
                    let mut tally = self.tally.borrow_mut();
                    tally.transport_failures += 1;
                    if invocation.key.is_some() {
                        tally.keyed_retries += 1;
                    } else if rng.bool() {
                        tally.unkeyed_retries += 1;
                    } else {
                        tally.unkeyed_dropped += 1;
                        return;
                    }
                    failed_on = Some(api);
                }
            }
        }
    }

    /// The address to send to: after a failure on `failed_on`, the next one published
    /// (or, if none comes within a moment, the one there is: the failure was not a
    /// kill).
    async fn api(&self, failed_on: Option<&str>) -> String {
        let mut address = self.address.clone();
        let moved_on = tokio::time::timeout(
            Duration::from_millis(500),
            address.wait_for(|api| api.is_some() && api.as_deref() != failed_on),
        )
        .await
        .ok()
        .and_then(|published| published.ok().map(|api| api.clone()));
        if let Some(Some(api)) = moved_on {
            return api;
        }
        let up = tokio::time::timeout(PATIENCE, address.wait_for(Option::is_some))
            .await
            .expect("the control plane comes back")
            .expect("the killer publishes");
        up.clone().expect("published")
    }

    /// Kills the control plane `config.kills` times: each but the last after the
    /// clients got a random number of 202s, the last once they are done (while the
    /// executions still run), each after a random delay more. Sometimes it kills its
    /// start too. It starts it again each time on the same data directory (`args`),
    /// publishing its new address, and returns the last one.
    pub(crate) async fn killer(
        &self,
        publish: &watch::Sender<Option<String>>,
        mut plane: ControlPlane,
        args: &[&str],
        rng: &mut fastrand::Rng,
    ) -> (ControlPlane, Vec<Kill>) {
        let total = self.config.invocations;
        let mut thresholds: Vec<usize> = (1..self.config.kills)
            .map(|_| rng.usize(total / 20..total * 9 / 10))
            .collect();
        thresholds.sort_unstable();
        // The last: every invocation answered or given up.
        thresholds.extend((self.config.kills > 0).then_some(usize::MAX));
        let mut kills = Vec::new();
        let began = Instant::now();
        for threshold in thresholds {
            let clients = self.config.clients;
            eventually_within(PATIENCE, &format!("{threshold} 202s"), || async move {
                let accepted = self.accepted.borrow().len();
                let reached = if threshold == usize::MAX {
                    self.done.get() == clients
                } else {
                    accepted >= threshold
                };
                reached.then_some(())
            })
            .await;
            // The random moment is the point of the test.
            let most = if threshold == usize::MAX { 2000 } else { 300 };
            tokio::time::sleep(Duration::from_millis(rng.u64(0..most))).await;
            let accepted = self.accepted.borrow().len();
            publish.send_replace(None);
            let down = Instant::now();
            plane.kill().await;
            let during_start = if rng.u8(..3) == 0 {
                let delay = Duration::from_millis(rng.u64(0..150));
                Some((delay, ControlPlane::kill_during_start(args, delay).await))
            } else {
                None
            };
            plane = ControlPlane::start(args, self.http).await;
            let down_for = down.elapsed();
            publish.send_replace(Some(plane.api.clone()));
            let opened = plane
                .startup_log()
                .iter()
                .find(|line| line.contains("store open"))
                .expect("a store open line");
            let restored = ["queued", "redispatched", "ended"]
                .map(|key| log_count(opened, key).expect("its counts"));
            kills.push(Kill {
                at: down.duration_since(began),
                accepted,
                during_start,
                down_for,
                restored,
            });
        }
        (plane, kills)
    }
}
