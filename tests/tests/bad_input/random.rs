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
    let api = api_with_echo().await;
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
