//! The sweeper asks the dispatcher to let go of what it holds idle (pooled connections):
//! the dispatcher owns no task, so nobody else would.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use core_types::{Dispatch, DispatchOutcome, DispatchRequest, DispatchSuccess};
use scheduler::{Scheduler, SchedulerConfig, SchedulerParts};

/// Echoes, and counts how often it is asked to sweep.
#[derive(Default)]
struct CountingSweeps(AtomicUsize);

impl CountingSweeps {
    fn sweeps(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl Dispatch for CountingSweeps {
    async fn dispatch(&self, request: DispatchRequest) -> DispatchOutcome {
        Ok(DispatchSuccess::warm(request.input))
    }

    fn sweep_idle(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

const EVERY: Duration = Duration::from_secs(5);

fn scheduler(dispatch: &Arc<CountingSweeps>) -> Scheduler {
    let config = SchedulerConfig {
        sweep_interval: EVERY,
        ..SchedulerConfig::default()
    };
    Scheduler::new(SchedulerParts::in_memory(dispatch.clone()), config)
}

// Paused time: each sleep below moves the clock to a point between two sweeps, and the
// current-thread runtime runs the sweep due before it first, so the counts are exact.
#[tokio::test(start_paused = true)]
async fn the_sweeper_asks_the_dispatcher_to_sweep_once_per_interval_until_shutdown() {
    let dispatch = Arc::new(CountingSweeps::default());
    let scheduler = scheduler(&dispatch);
    assert_eq!(
        dispatch.sweeps(),
        0,
        "nothing sweeps before the sweeper starts"
    );
    scheduler.start_sweeper();

    // The first sweep is at once, then one per interval.
    tokio::time::sleep(EVERY / 2).await;
    assert_eq!(dispatch.sweeps(), 1);
    tokio::time::sleep(EVERY).await;
    assert_eq!(dispatch.sweeps(), 2);
    tokio::time::sleep(EVERY * 3).await;
    assert_eq!(dispatch.sweeps(), 5);

    tokio::time::timeout(
        Duration::from_secs(10),
        scheduler.shutdown(Duration::from_secs(1)),
    )
    .await
    .expect("shutdown ends");
    let after_shutdown = dispatch.sweeps();
    tokio::time::sleep(EVERY * 4).await;
    assert_eq!(dispatch.sweeps(), after_shutdown, "no sweep after shutdown");
}

#[tokio::test(start_paused = true)]
async fn the_background_loop_starts_the_sweeper_too() {
    let dispatch = Arc::new(CountingSweeps::default());
    let scheduler = scheduler(&dispatch);
    scheduler.start_background();
    tokio::time::sleep(EVERY + EVERY / 2).await;
    assert_eq!(dispatch.sweeps(), 2);
    tokio::time::timeout(
        Duration::from_secs(10),
        scheduler.shutdown(Duration::from_secs(1)),
    )
    .await
    .expect("shutdown ends");
}
