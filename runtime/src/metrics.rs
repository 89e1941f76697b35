//! Creating metrics in a process's explicit registry, one call per metric: each function
//! builds the metric, registers it and hands it back, so a component's `new()` reads as the
//! list of its metrics. Names follow `panoptes_<component>_<name>_<unit>`; registering a name
//! twice is an error (a bug), never a silent second series.

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Registers `metric` in `registry` and returns it.
pub fn register<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: M,
) -> Result<M, prometheus::Error> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// An unlabelled counter.
pub fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
) -> Result<IntCounter, prometheus::Error> {
    register(registry, IntCounter::new(name, help)?)
}

/// A counter with `labels`.
pub fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels)?)
}

/// An unlabelled gauge.
pub fn gauge(registry: &Registry, name: &str, help: &str) -> Result<IntGauge, prometheus::Error> {
    register(registry, IntGauge::new(name, help)?)
}

/// A gauge with `labels`.
pub fn gauge_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, prometheus::Error> {
    register(registry, IntGaugeVec::new(Opts::new(name, help), labels)?)
}

/// An unlabelled histogram with `buckets` (upper bounds, ascending).
pub fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: Vec<f64>,
) -> Result<Histogram, prometheus::Error> {
    register(
        registry,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?,
    )
}

/// Registers the standard process metrics (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`,
/// `process_max_fds`, `process_start_time_seconds`, `process_threads`; read from procfs at
/// each scrape) in `registry`, the names operators' default dashboards expect. Registering
/// them twice in one registry is harmless (the second call is a no-op), so every server of a
/// process's registry may call it. Other systems than Linux get none.
pub fn register_process_metrics(registry: &Registry) -> Result<(), prometheus::Error> {
    #[cfg(target_os = "linux")]
    match registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    )) {
        Ok(()) | Err(prometheus::Error::AlreadyReg) => {}
        Err(e) => return Err(e),
    }
    #[cfg(not(target_os = "linux"))]
    let _ = registry;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_are_gathered_once() {
        let r = Registry::new();
        register_process_metrics(&r).unwrap();
        register_process_metrics(&r).unwrap();
        let names: Vec<String> = r.gather().iter().map(|f| f.name().to_string()).collect();
        for want in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert_eq!(names.iter().filter(|n| *n == want).count(), 1, "{names:?}");
        }
    }

    #[test]
    fn registered_metrics_are_gathered_and_names_are_unique() {
        let r = Registry::new();
        let c = counter_vec(&r, "panoptes_t_total", "t", &["camera"]).unwrap();
        c.with_label_values(&["a"]).inc();
        gauge(&r, "panoptes_t_gauge", "g").unwrap().set(2);
        histogram(&r, "panoptes_t_seconds", "h", vec![0.1, 1.0])
            .unwrap()
            .observe(0.5);
        assert_eq!(r.gather().len(), 3);
        assert!(counter(&r, "panoptes_t_total", "again").is_err());
    }
}
