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
        deployments: DeploymentsReport::default(),
        runs,
        elapsed_secs: 1.0,
    };
    let problems = problems(&report);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("sync LOCAL at concurrency 1 had 2 error(s)"));
    assert!(problems[1].contains("sync POOL at concurrency 1 had no throughput"));
    assert!(markdown(&report).contains("| sync LOCAL | 1 |"));
}

fn measure(req_per_sec: f64, p50_us: f64, driver_cpu_us: f64) -> deployments::Measure {
    deployments::Measure {
        requests: 1_000,
        errors: 0,
        req_per_sec,
        p50_us,
        p99_us: p50_us * 3.0,
        driver_cpu_us,
        function_cpu_us: Some(10.0),
    }
}

fn pair_run(
    concurrency: usize,
    repetition: usize,
    base: deployments::Measure,
    measured: deployments::Measure,
) -> deployments::PairRun {
    deployments::PairRun {
        concurrency,
        repetition,
        base,
        measured,
        control_plane_rss_kb: 10_240 * repetition as u64,
    }
}

#[test]
fn pairs_take_medians_per_side_and_ratios_of_measured_over_base() {
    let runs = [
        pair_run(16, 1, measure(100.0, 10.0, 40.0), measure(90.0, 11.0, 44.0)),
        pair_run(
            16,
            2,
            measure(300.0, 30.0, 60.0),
            measure(270.0, 33.0, 66.0),
        ),
        pair_run(
            16,
            3,
            measure(200.0, 20.0, 50.0),
            measure(180.0, 22.0, 55.0),
        ),
        pair_run(1, 1, measure(50.0, 5.0, 0.0), measure(0.0, 0.0, 0.0)),
    ];
    let pairs = deployments::pairs(&runs);
    assert_eq!(
        pairs
            .iter()
            .map(|pair| pair.concurrency)
            .collect::<Vec<_>>(),
        [16, 1],
        "in the order the runs show them"
    );
    let sixteen = &pairs[0];
    assert_eq!(sixteen.base.req_per_sec, 200.0);
    assert_eq!(sixteen.measured.p50_us, 22.0);
    assert_eq!(sixteen.base.requests, 3_000, "requests are summed");
    assert_eq!(sixteen.control_plane_rss_kb, 30_720, "the highest RSS");
    let ratios = &sixteen.ratios;
    assert!((ratios.req_per_sec.unwrap() - 0.9).abs() < 1e-9);
    assert!((ratios.p50.unwrap() - 1.1).abs() < 1e-9);
    assert!((ratios.p99.unwrap() - 1.1).abs() < 1e-9);
    assert!((ratios.driver_cpu.unwrap() - 1.1).abs() < 1e-9);
    // A base of zero gives no ratio rather than an infinite one.
    let one = &pairs[1];
    assert_eq!(one.ratios.req_per_sec, Some(0.0));
    assert_eq!(one.ratios.driver_cpu, None);
}

fn cold(first: f64, init: Option<u64>, warm: f64) -> deployments::ColdStart {
    deployments::ColdStart {
        first_invoke_ms: first,
        cold_start: init.is_some(),
        init_duration_ms: init,
        warm_invoke_ms: warm,
    }
}

#[test]
fn a_cold_start_costs_what_it_took_beyond_its_replicas_own_start() {
    let start = cold(12.5, Some(10), 0.5);
    assert_eq!(start.beyond_init_ms(), Some(2.5));
    assert_eq!(start.beyond_init_and_warm_ms(), Some(2.0));
    assert_eq!(cold(12.5, None, 0.5).beyond_init_ms(), None);

    let starts = [
        cold(12.0, Some(10), 0.5),
        cold(15.0, Some(11), 0.7),
        cold(13.0, Some(12), 0.6),
    ];
    let summary = deployments::cold_summary(&starts).expect("three cold starts");
    assert_eq!(summary.count, 3);
    assert_eq!(summary.first_invoke_ms, 13.0);
    assert_eq!(summary.init_duration_ms, 11.0);
    assert_eq!(summary.beyond_init_ms, 2.0, "the median of 2, 4 and 1");
    assert_eq!(summary.beyond_init_max_ms, 4.0);
    assert_eq!(summary.warm_invoke_ms, 0.6);
    assert!(deployments::cold_summary(&[]).is_none());
}

#[test]
fn errors_no_throughput_and_a_missing_cold_start_are_problems() {
    let mut failing = measure(100.0, 10.0, 1.0);
    failing.errors = 3;
    let report = DeploymentsReport {
        warm: deployments::pairs(&[pair_run(
            1,
            1,
            measure(100.0, 10.0, 1.0),
            measure(0.0, 0.0, 0.0),
        )]),
        stdio: deployments::pairs(&[pair_run(16, 1, failing, measure(50.0, 20.0, 2.0))]),
        stdio_after_warm: deployments::pairs(&[pair_run(
            1,
            1,
            measure(50.0, 20.0, 2.0),
            measure(5.0, 200.0, 20.0),
        )]),
        cold: vec![cold(12.0, Some(10), 0.5), cold(12.0, None, 0.5)],
        ..DeploymentsReport::default()
    };
    let problems = deployments::problems(&report);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].contains("DEPLOYMENT at concurrency 1 had no throughput"));
    assert!(problems[1].contains("the floor at concurrency 16 had 3 error(s)"));
    assert!(problems[2].contains("invocation 2 at zero replicas"));

    let text = deployments_markdown(&report);
    assert!(text.contains("| 1 | 100 | 0 | 0.00 |"), "{text}");
    assert!(text.contains("| 2 | 12.0 | - | - | 0.5 | - |"), "{text}");
    assert!(
        text.contains("| 1, after the warm rows | 1000 | 50 | 5 | 0.10 |"),
        "{text}"
    );
    assert!(deployments::problems(&DeploymentsReport::default()).is_empty());
}

#[test]
fn a_replica_is_a_live_child_whose_environment_names_its_function() {
    let stat = "4242 (bench-echo) S 4100 4242 4242 0 -1 4194560 130 0 0 0 1 0 0 0 20";
    assert_eq!(deployments::parse_parent(stat), Some(4100));
    let odd = "4243 (a) (b) R 77 4243 4243 0 -1 0 0 0 0 0 0 0 0 0 20";
    assert_eq!(deployments::parse_parent(odd), Some(77));
    let zombie = "4244 (cat) Z 4100 4244 4244 0 -1 0 0 0 0 0 0 0 0 0 20";
    assert_eq!(deployments::parse_parent(zombie), None, "a zombie is gone");

    let environ = b"PATH=/usr/bin\0PORT=41234\0FUNCTION_NAME=bench-cold\0WARM=true\0";
    assert!(deployments::names_function(environ, "bench-cold"));
    assert!(!deployments::names_function(environ, "bench"));
    assert!(!deployments::names_function(
        b"FUNCTION_NAME=bench-cold-2\0",
        "bench-cold"
    ));
}
