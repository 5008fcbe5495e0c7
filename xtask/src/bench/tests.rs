//! The bench's parsing and arithmetic, without a server.

use super::*;

#[test]
fn the_median_of_an_odd_count_is_the_middle_value() {
    assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median(&[7.5]), Some(7.5));
}

#[test]
fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
    assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    assert_eq!(median(&[]), None);
}

#[test]
fn the_listening_line_gives_both_bound_addresses() {
    let line = r#"{"timestamp":"2026-11-27T10:00:00.000Z","level":"INFO","fields":{"message":"control plane listening","api_addr":"127.0.0.1:41234","management_addr":"127.0.0.1:41235","scheduler":"Background","callback_base_url":"http://127.0.0.1:41234/v1/internal/executions"},"target":"control_plane"}"#;
    assert_eq!(
        parse_listening(line),
        Some((
            "127.0.0.1:41234".parse().unwrap(),
            "127.0.0.1:41235".parse().unwrap()
        ))
    );
}

#[test]
fn other_log_lines_are_not_the_listening_line() {
    let other = r#"{"level":"INFO","fields":{"message":"control plane stopped"}}"#;
    assert_eq!(parse_listening(other), None);
    assert_eq!(parse_listening("control plane listening api_addr=1"), None);
    let flattened = r#"{"message":"control plane listening","api_addr":"127.0.0.1:1","management_addr":"127.0.0.1:2"}"#;
    assert!(parse_listening(flattened).is_some());
}

#[test]
fn rss_and_its_peak_come_from_proc_status() {
    let status = "Name:\tcontrol-plane\nVmPeak:\t  812345 kB\nVmHWM:\t   20480 kB\n\
                  VmRSS:\t   10240 kB\nThreads:\t3\n";
    assert_eq!(
        parse_memory(status),
        Some(Memory {
            rss_kb: 10_240,
            peak_rss_kb: 20_480
        })
    );
    assert_eq!(parse_memory("Name:\tzombie\n"), None);
}

#[test]
fn cpu_lists_expand_ranges() {
    assert_eq!(parse_cpu_list("0-1"), Some(vec![0, 1]));
    assert_eq!(parse_cpu_list("0,2-4,7"), Some(vec![0, 2, 3, 4, 7]));
    assert_eq!(parse_cpu_list("3"), Some(vec![3]));
    assert_eq!(parse_cpu_list(""), None);
    assert_eq!(parse_cpu_list("4-2"), None);
}

#[test]
fn two_cpus_split_the_load_generator_from_the_servers() {
    let pinning = Pinning::choose(&[2, 5], true);
    assert_eq!((pinning.loadgen, pinning.servers), (Some(2), Some(5)));
    assert!(pinning.describe().contains("loadgen on CPU 2"));
    let single = Pinning::choose(&[0], true);
    assert_eq!((single.loadgen, single.servers), (None, None));
    assert!(single.describe().contains("one CPU"));
    assert!(
        Pinning::choose(&[0, 1], false)
            .describe()
            .contains("taskset")
    );
}

fn run(scenario: Scenario, concurrency: usize, req_per_sec: f64, p50_us: f64) -> RunResult {
    RunResult {
        scenario,
        concurrency,
        repetition: 1,
        requests: 1_000,
        errors: 0,
        req_per_sec,
        p50_us,
        p99_us: p50_us * 2.0,
        enqueue_per_sec: None,
        control_plane_cpu_secs: 0.02,
        echo_cpu_secs: 0.01,
        loadgen_cpu_secs: 0.5,
        window_secs: 1.0,
        peak_rss_kb: 10_000,
        rss_kb: 9_000,
    }
}

#[test]
fn rows_take_medians_and_ratios_against_the_echo_at_the_same_concurrency() {
    let runs = [
        run(Scenario::DirectEcho, 16, 100.0, 10.0),
        run(Scenario::DirectEcho, 16, 300.0, 30.0),
        run(Scenario::DirectEcho, 16, 200.0, 20.0),
        run(Scenario::SyncPool, 16, 50.0, 40.0),
        run(Scenario::SyncPool, 1, 10.0, 5.0),
    ];
    let rows = rows(&runs);
    assert_eq!(rows.len(), 3);
    let echo = &rows[0];
    assert_eq!(
        (echo.scenario, echo.req_per_sec),
        (Scenario::DirectEcho, 200.0)
    );
    let pool = rows
        .iter()
        .find(|row| row.scenario == Scenario::SyncPool && row.concurrency == 16)
        .unwrap();
    assert_eq!(pool.throughput_vs_echo, Some(0.25));
    assert_eq!(pool.p50_vs_echo, Some(2.0));
    // 20 us of control-plane CPU per request against 10 us of echo CPU.
    assert!((pool.cpu_vs_echo.unwrap() - 2.0).abs() < 1e-9);
    let alone = rows.iter().find(|row| row.concurrency == 1).unwrap();
    assert_eq!(
        alone.throughput_vs_echo, None,
        "no echo run at concurrency 1"
    );
}

#[test]
fn errors_or_no_throughput_make_the_run_fail() {
    let mut runs = vec![run(Scenario::DirectEcho, 1, 100.0, 10.0)];
    runs.push(RunResult {
        errors: 2,
        ..run(Scenario::SyncLocal, 1, 100.0, 10.0)
    });
    runs.push(run(Scenario::SyncPool, 1, 0.0, 0.0));
    let report = Report {
        mode: "quick",
        commit: "abc".to_owned(),
        cores: 2,
        pinning: "not pinned".to_owned(),
        plan: Plan::of(Mode::Quick),
        startup: Startup {
            time_to_healthy_ms: 5.0,
            idle_rss_kb: 5_000,
        },
        at_end: Memory {
            rss_kb: 9_000,
            peak_rss_kb: 10_000,
        },
        rows: rows(&runs),
        memory: MemoryResult {
            concurrency: 16,
            secs: 1.0,
            records: 100,
            errors: 0,
            rss_before_kb: 1,
            rss_after_kb: 2,
            peak_rss_kb: 2,
            bytes_per_record: 10.0,
            output_bytes: 19,
        },
        runs,
        elapsed_secs: 1.0,
    };
    let problems = problems(&report);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("sync LOCAL at concurrency 1 had 2 error(s)"));
    assert!(problems[1].contains("sync POOL at concurrency 1 had no throughput"));
    assert!(markdown(&report).contains("| sync LOCAL | 1 |"));
}
