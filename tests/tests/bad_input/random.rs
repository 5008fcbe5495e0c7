//! The random sweep: deterministic (a seeded xorshift), JSON-ish bodies, hostile names
//! and headers on every route; never a 5xx.

use super::*;

/// A small deterministic generator (xorshift64*), so the random sweep is the same on
/// every run and needs no crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).expect("small")
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// JSON-ish text: fragments that are often almost valid, with hostile strings inside.
fn random_body(rng: &mut Rng) -> Vec<u8> {
    const PIECES: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"input\"",
        "\"metadata\"",
        "\"name\"",
        "\"image\"",
        "\"executionMode\"",
        "\"LOCAL\"",
        "\"POOL\"",
        "\"timeoutMs\"",
        "\"status\"",
        "\"success\"",
        "\"error\"",
        "\"output\"",
        "null",
        "true",
        "false",
        "0",
        "-1",
        "1e400",
        "18446744073709551616",
        "\"\\u0000\"",
        "\"\\uD800\"",
        "\"é💥\"",
        "\"..\"",
        "\" OR 1=1 --\"",
        " ",
        "\n",
        "\"",
    ];
    let mut body = Vec::new();
    for _ in 0..rng.below(24) {
        body.extend_from_slice(rng.pick(PIECES).as_bytes());
    }
    if rng.below(10) == 0 {
        body.push(u8::try_from(rng.below(256)).expect("a byte"));
    }
    body
}

#[tokio::test(start_paused = true)]
async fn random_bodies_names_and_headers_never_get_a_5xx() {
    random_sweep(&api_with_echo().await).await;
}

#[tokio::test(start_paused = true)]
async fn with_authentication_on_the_random_sweep_holds_for_an_admin() {
    random_sweep(&api_with_echo_behind(Api::with_authentication(config())).await).await;
}

#[tokio::test(start_paused = true)]
async fn with_authentication_on_a_stranger_s_random_requests_are_all_401_and_change_nothing() {
    let api = api_with_echo_behind(Api::with_authentication(config()))
        .await
        .without_token();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    for _ in 0..300 {
        let uri = rng.pick(&[
            "/v1/functions",
            "/v1/functions/echo:invoke",
            "/v1/functions/echo:enqueue",
            "/v1/internal/executions/exec-1:complete",
            "/v1/internal/executions/forged.credential/exec-1:complete",
            "/v1/functions/echo",
        ]);
        let mut call = Call::post(uri).body("application/json", random_body(&mut rng));
        if rng.below(2) == 0 {
            let token: &str = rng.pick(&[
                "",
                "Bearer",
                "Bearer ",
                "Bearer wrong-token-12345678",
                "Basic YTpi",
            ]);
            call = call.header("Authorization", token);
        }
        let answer = api.send(&call).await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "for {}",
            call.describe()
        );
        assert_eq!(not_a_refusal(&answer), None, "for {}", call.describe());
    }
    assert_eq!(
        api.issued_executions(),
        [],
        "a stranger created an execution"
    );
    assert_eq!(
        api.scheduler.functions().len(),
        1,
        "a stranger changed the functions"
    );
}

async fn random_sweep(api: &Api) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let segments = hostile_segments();
    let names: Vec<&str> = segments
        .iter()
        .map(String::as_str)
        .chain([ECHO, "exec-1"])
        .collect();
    for _ in 0..600 {
        let name = rng.pick(&names);
        let uri = match rng.below(5) {
            0 => "/v1/functions".to_owned(),
            1 => action(name, "invoke"),
            2 => action(name, "enqueue"),
            3 => complete(name),
            _ => format!("/v1/functions/{name}"),
        };
        let content_type = rng.pick(&[
            "application/json",
            "text/plain",
            "application/json; charset=utf-8",
        ]);
        let mut call = Call::post(uri).body(content_type, random_body(&mut rng));
        for (header, values) in [
            ("X-Timeout-Ms", ["1", "0", "-5", "abc"]),
            ("X-Dispatch-Attempt", ["1", "0", "2", "x"]),
            ("Idempotency-Key", ["k", "", "é", "k2"]),
        ] {
            if rng.below(3) == 0 {
                let value: &str = rng.pick(&values);
                call = call.header(header, value);
            }
        }
        let answer = api.send(&call).await;
        assert_ne!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{}",
            call.describe()
        );
        assert!(
            !answer.status.is_server_error(),
            "{} for {}",
            answer.status,
            call.describe()
        );
        if answer.status.is_client_error() {
            assert_eq!(not_a_refusal(&answer), None, "for {}", call.describe());
        }
    }
    let health = api.send(&Call::get("/actuator/health")).await;
    assert_eq!(health.status, StatusCode::OK);
    let queue = api
        .scheduler
        .queue_snapshot(ECHO)
        .expect("echo is registered");
    assert_eq!(queue.in_flight, 0, "{queue:?}");
}
