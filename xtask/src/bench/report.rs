//! The bench's Markdown report: the tables of `target/bench/bench.md`.

use super::*;

pub(super) fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

pub(super) fn optional(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{value:.digits$}"))
}

pub(super) fn markdown(report: &Report) -> String {
    let plan = &report.plan;
    let mut text = String::new();
    let _ = writeln!(text, "# `cargo xtask bench` ({})\n", report.mode);
    let _ = writeln!(
        text,
        "Commit `{}`, {} CPU(s), {}. {} repetition(s), medians; {} s warm-up then {} s \
         per run; async: {} enqueued per run.\n",
        report.commit,
        report.cores,
        report.pinning,
        plan.repetitions,
        plan.warmup_secs,
        plan.duration_secs,
        plan.async_count
    );
    let _ = writeln!(
        text,
        "Control plane: first healthy answer {:.1} ms after spawn; idle RSS {:.1} MiB; \
         after all scenarios (every record retained, TTL 5 minutes) RSS {:.1} MiB, peak \
         {:.1} MiB. The RSS columns below are read after each row's runs, so they grow \
         with the records of all runs before, in run order (repetition, concurrency, \
         scenario).\n",
        report.startup.time_to_healthy_ms,
        mib(report.startup.idle_rss_kb),
        mib(report.at_end.rss_kb),
        mib(report.at_end.peak_rss_kb),
    );
    text.push_str(
        "| scenario | conc | req/s | p50 us | p99 us | errors | enqueue/s | req/s vs echo | \
         p50 vs echo |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for row in &report.rows {
        let _ = writeln!(
            text,
            "| {} | {} | {:.0} | {:.1} | {:.1} | {} | {} | {} | {} |",
            row.scenario.name(),
            row.concurrency,
            row.req_per_sec,
            row.p50_us,
            row.p99_us,
            row.errors,
            optional(row.enqueue_per_sec, 0),
            optional(row.throughput_vs_echo, 2),
            optional(row.p50_vs_echo, 2),
        );
    }
    text.push_str(
        "\n| scenario | conc | CP CPU us/req | echo CPU us/req | CP CPU vs echo CPU | \
         loadgen core % | servers core % | CP peak RSS MiB | CP RSS MiB |\n\
         |---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for row in &report.rows {
        let _ = writeln!(
            text,
            "| {} | {} | {:.1} | {:.1} | {} | {:.0} | {:.0} | {:.1} | {:.1} |",
            row.scenario.name(),
            row.concurrency,
            row.control_plane_cpu_us_per_request,
            row.echo_cpu_us_per_request,
            optional(row.cpu_vs_echo, 2),
            row.loadgen_busy_percent,
            row.servers_busy_percent,
            mib(row.peak_rss_kb),
            mib(row.rss_kb),
        );
    }
    text.push_str(
        "\nasync POOL: req/s is completions per second from the first enqueue to the last \
         terminal execution; p50/p99 are `finishedAt - createdAt` of sampled records \
         (millisecond timestamps). CPU per request divides the CPU time of the measured \
         window by its requests (for async: by the executions). \"CP CPU vs echo CPU\" is \
         the control plane's CPU per request over the echo endpoint's in the direct run at \
         the same concurrency; in the bare proxy's row \"CP CPU\" is the proxy's (bench-echo \
         forwarding each request to the echo on a connection of its own: two HTTP \
         exchanges and nothing else). \"core %\" is CPU time over the window in percent of one \
         core: loadgen near 100 % means loadgen, not the servers, set the pace.\n\n",
    );
    let memory = &report.memory;
    let _ = writeln!(
        text,
        "Memory: {} s of sync LOCAL load at concurrency {} on a fresh control plane \
         retained {} finished records; RSS {:.1} -> {:.1} MiB (peak {:.1} MiB): \
         **{:.0} bytes per retained record** (each keeps a {}-byte output).",
        memory.secs,
        memory.concurrency,
        memory.records,
        mib(memory.rss_before_kb),
        mib(memory.rss_after_kb),
        mib(memory.peak_rss_kb),
        memory.bytes_per_record,
        memory.output_bytes
    );
    text
}

/// The section of the rows of functions that run themselves.
pub(super) fn deployments_markdown(report: &DeploymentsReport) -> String {
    let mut text = String::from("\n## Functions that run themselves\n\n");
    text.push_str(
        "Warm `DEPLOYMENT` replica vs `POOL`, the same server (bench-echo) on one control \
         plane: `bench-warm-pool` dispatches to a bench-echo the bench started, \
         `bench-deployment` to the one replica the `process` provider started from \
         `command`; sync invocations, medians; D/P is DEPLOYMENT over POOL.\n\n\
         | conc | POOL req/s | DEPL. req/s | req/s D/P | POOL p50 us | DEPL. p50 us | p50 D/P \
         | POOL p99 us | DEPL. p99 us | p99 D/P | CP CPU us/req POOL / DEPL. | echo CPU us/req \
         POOL / DEPL. |\n|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for pair in &report.warm {
        let (pool, deployment, ratios) = (&pair.base, &pair.measured, &pair.ratios);
        let _ = writeln!(
            text,
            "| {} | {:.0} | {:.0} | {} | {:.1} | {:.1} | {} | {:.1} | {:.1} | {} | {:.1} / {:.1} | {} / {} |",
            pair.concurrency,
            pool.req_per_sec,
            deployment.req_per_sec,
            optional(ratios.req_per_sec, 2),
            pool.p50_us,
            deployment.p50_us,
            optional(ratios.p50, 2),
            pool.p99_us,
            deployment.p99_us,
            optional(ratios.p99, 2),
            pool.driver_cpu_us,
            deployment.driver_cpu_us,
            optional(pool.function_cpu_us, 1),
            optional(deployment.function_cpu_us, 1),
        );
    }
    text.push_str(
        "\nOne-shot `STDIO` `cat` vs its floor: `bench-stdio` (`command: [\"cat\"]`) invoked \
         sync, and the same number of spawns at the same concurrency by `spawn-floor`, \
         pinned where the control plane runs: `cat` started with stdin and stdout piped, \
         the invocation's JSON written, stdout read to its end, the exit waited for. \
         I/F is the invocation over the floor. Spawner CPU: the floor's own, the control \
         plane's (neither counts the `cat`s; theirs is the floor's children's). The rows \
         run on the fresh control plane, then once more after the warm rows, when it \
         holds their records (RSS: the control plane's after the invocations). \
         \"spawns\" is the floor's, summed over the repetitions (the invocations made as \
         many).\n\n\
         | conc | spawns | floor /s | invocations/s | /s I/F | floor p50 us | invocation p50 us \
         | p50 I/F | floor p99 us | invocation p99 us | p99 I/F | spawner CPU us floor / CP | \
         `cat` CPU us | CP RSS MiB |\n|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    let after_warm = report
        .stdio_after_warm
        .iter()
        .map(|pair| (pair, ", after the warm rows"));
    for (pair, when) in report.stdio.iter().map(|pair| (pair, "")).chain(after_warm) {
        let (floor, invocation, ratios) = (&pair.base, &pair.measured, &pair.ratios);
        let _ = writeln!(
            text,
            "| {}{when} | {} | {:.0} | {:.0} | {} | {:.1} | {:.1} | {} | {:.1} | {:.1} | {} | {:.1} / {:.1} | {} | {:.1} |",
            pair.concurrency,
            floor.requests,
            floor.req_per_sec,
            invocation.req_per_sec,
            optional(ratios.req_per_sec, 2),
            floor.p50_us,
            invocation.p50_us,
            optional(ratios.p50, 2),
            floor.p99_us,
            invocation.p99_us,
            optional(ratios.p99, 2),
            floor.driver_cpu_us,
            invocation.driver_cpu_us,
            optional(floor.function_cpu_us, 1),
            mib(pair.control_plane_rss_kb),
        );
    }
    text.push_str(
        "\nScale from zero: `bench-cold` (bench-echo, `minReplicas: 0`, short scaling \
         windows), one sync invocation once it is at zero, timed by the bench on a fresh \
         connection; `initDurationMs` from its execution record (the replica's start to \
         ready, whole milliseconds); then the next invocation, warm, the same way.\n\n\
         | # | first invocation ms | initDurationMs | first - init ms | next invocation ms | \
         first - init - next ms |\n|--:|--:|--:|--:|--:|--:|\n",
    );
    for (number, start) in report.cold.iter().enumerate() {
        let _ = writeln!(
            text,
            "| {} | {:.1} | {} | {} | {:.1} | {} |",
            number + 1,
            start.first_invoke_ms,
            optional(start.init_duration_ms.map(|ms| ms as f64), 0),
            optional(start.beyond_init_ms(), 1),
            start.warm_invoke_ms,
            optional(start.beyond_init_and_warm_ms(), 1),
        );
    }
    if let Some(summary) = &report.cold_summary {
        let _ = writeln!(
            text,
            "| median of {} | {:.1} | {:.0} | {:.1} (max {:.1}) | {:.1} | {:.1} |",
            summary.count,
            summary.first_invoke_ms,
            summary.init_duration_ms,
            summary.beyond_init_ms,
            summary.beyond_init_max_ms,
            summary.warm_invoke_ms,
            summary.beyond_init_and_warm_ms,
        );
    }
    text
}
