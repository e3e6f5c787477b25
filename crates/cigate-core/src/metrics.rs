//! Delivery metrics (DORA-style) computed from jobs: pure arithmetic over what the
//! provider returned, so the definitions can be tested exactly and recomputed by anyone
//! (they are written out in `docs/metrics.md`).
//!
//! A job counts when it is completed and its `completed_at` lies in `[from, to)`.
//! Outcomes: `passed` and `failed` (conclusions); every other conclusion (cancelled,
//! skipped, timeout, partial) counts in `jobs_total` only.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::model::{job_conclusion, job_status, Job};

/// Name fragments that make a workflow a deploy workflow when none are named.
pub const DEPLOY_NAME_HINTS: [&str; 3] = ["deploy", "release", "prod"];

/// Whether a workflow named `name` is a deploy workflow by the default rule: its name
/// contains `deploy`, `release` or `prod`, in any case.
pub fn is_deploy_name(name: &str) -> bool {
    let lower = name.to_lowercase();
    DEPLOY_NAME_HINTS.iter().any(|hint| lower.contains(hint))
}

/// The window of a metrics request: `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Window {
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.from <= at && at < self.to
    }

    /// Length in days (fractional).
    pub fn days(&self) -> f64 {
        (self.to - self.from).num_milliseconds() as f64 / 86_400_000.0
    }
}

/// One completed job reduced to what the figures need.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub id: String,
    pub completed_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    /// `passed`, `failed`, or another conclusion.
    pub conclusion: Option<String>,
    pub queued_ms: Option<i64>,
    /// Commit time of the revision the job ran.
    pub commit_at: Option<DateTime<Utc>>,
}

impl Sample {
    /// The job as a sample of `window`: `None` unless it is completed inside it.
    pub fn of(job: &Job, window: &Window) -> Option<Sample> {
        if job.status.as_deref() != Some(job_status::COMPLETED) {
            return None;
        }
        let completed_at = job.completed_at.filter(|at| window.contains(*at))?;
        Some(Sample {
            id: job.id.clone(),
            completed_at,
            started_at: job.started_at,
            conclusion: job.conclusion.clone(),
            queued_ms: job.queued_duration_ms,
            commit_at: job.commit_at,
        })
    }

    fn passed(&self) -> bool {
        self.conclusion.as_deref() == Some(job_conclusion::PASSED)
    }

    fn failed(&self) -> bool {
        self.conclusion.as_deref() == Some(job_conclusion::FAILED)
    }
}

/// `p50` and `p95` of a set of seconds, `null` when the set is empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, ToSchema)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
}

impl Percentiles {
    fn of(mut values: Vec<f64>) -> Percentiles {
        values.sort_by(f64::total_cmp);
        Percentiles {
            p50: nearest_rank(&values, 50),
            p95: nearest_rank(&values, 95),
        }
    }
}

/// The smallest value with at least `p` % of the values at or below it (`sorted`
/// ascending).
pub fn nearest_rank(sorted: &[f64], p: u32) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    // ceil(p/100 · n), at least 1.
    let rank = (u64::from(p) * sorted.len() as u64).div_ceil(100).max(1) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

/// The usual median: the middle value, or the mean of the two middle ones.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// The figures of one set of jobs (a workflow, an account, everything asked for).
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Figures {
    /// Completed jobs in the window.
    pub jobs_total: u64,
    pub passed: u64,
    pub failed: u64,
    /// passed ÷ (passed + failed); `null` without either.
    pub success_rate: Option<f64>,
    /// `completed_at − started_at`, seconds.
    pub duration_s: Percentiles,
    /// Time queued before starting, seconds, where the provider reports it.
    pub queued_s: Percentiles,
    /// Passed jobs of deploy workflows.
    pub deployments: u64,
    /// deployments ÷ window length in days.
    pub deployment_frequency_per_day: f64,
    /// failed ÷ (passed + failed) jobs of deploy workflows; `null` without any.
    pub change_failure_rate: Option<f64>,
    /// Mean length of the failure episodes of deploy workflows that ended in the window.
    pub mean_time_to_restore_s: Option<f64>,
    /// Median of deployment `completed_at` − commit time of the deployed revision.
    pub lead_time_s: Option<f64>,
}

/// One workflow's completed jobs in the window.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowSamples {
    pub workflow: String,
    pub deploy: bool,
    pub samples: Vec<Sample>,
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / 1000.0
}

/// Failure episodes of one deploy workflow: by `completed_at`, a failure while no
/// episode is open (it follows a pass, or opens the window) starts one, the next passed
/// job ends it. Other conclusions neither start nor end one. Lengths in seconds of the
/// episodes that ended.
pub fn restore_episodes(samples: &[Sample]) -> Vec<f64> {
    let mut ordered: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.passed() || s.failed())
        .collect();
    ordered.sort_by(|a, b| a.completed_at.cmp(&b.completed_at).then(a.id.cmp(&b.id)));
    let mut open: Option<DateTime<Utc>> = None;
    let mut episodes = Vec::new();
    for sample in ordered {
        match (sample.failed(), open) {
            (true, None) => open = Some(sample.completed_at),
            (false, Some(start)) => {
                episodes.push(seconds(start, sample.completed_at));
                open = None;
            }
            _ => {}
        }
    }
    episodes
}

/// The figures of `workflows` over `window`.
pub fn figures<'a>(
    workflows: impl IntoIterator<Item = &'a WorkflowSamples>,
    window: &Window,
) -> Figures {
    let mut f = Figures::default();
    let (mut durations, mut queued, mut restores, mut leads) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut deploy_passed, mut deploy_failed) = (0u64, 0u64);
    for wf in workflows {
        for s in &wf.samples {
            f.jobs_total += 1;
            f.passed += u64::from(s.passed());
            f.failed += u64::from(s.failed());
            if let Some(started) = s.started_at {
                durations.push(seconds(started, s.completed_at));
            }
            if let Some(ms) = s.queued_ms {
                queued.push(ms as f64 / 1000.0);
            }
            if wf.deploy {
                deploy_failed += u64::from(s.failed());
                if s.passed() {
                    deploy_passed += 1;
                    if let Some(lead) = s.commit_at.map(|c| seconds(c, s.completed_at)) {
                        if lead > 0.0 {
                            leads.push(lead);
                        }
                    }
                }
            }
        }
        if wf.deploy {
            restores.extend(restore_episodes(&wf.samples));
        }
    }
    f.success_rate = ratio(f.passed, f.passed + f.failed);
    f.duration_s = Percentiles::of(durations);
    f.queued_s = Percentiles::of(queued);
    f.deployments = deploy_passed;
    let days = window.days();
    f.deployment_frequency_per_day = if days > 0.0 {
        deploy_passed as f64 / days
    } else {
        0.0
    };
    f.change_failure_rate = ratio(deploy_failed, deploy_passed + deploy_failed);
    f.mean_time_to_restore_s =
        (!restores.is_empty()).then(|| restores.iter().sum::<f64>() / restores.len() as f64);
    f.lead_time_s = median(leads);
    f
}

/// The figures of `workflows` step by step over `window`: one point per `step` from
/// its start (the last one may be shorter), each the figures of the jobs completed in
/// that step alone (a failure episode counts where it both starts and ends). What a
/// chart of a window draws. A step of zero or less is one point for the whole window.
pub fn series<'a>(
    workflows: impl IntoIterator<Item = &'a WorkflowSamples>,
    window: &Window,
    step: chrono::Duration,
) -> Vec<(Window, Figures)> {
    let workflows: Vec<&WorkflowSamples> = workflows.into_iter().collect();
    let step = if step > chrono::Duration::zero() {
        step
    } else {
        window.to - window.from
    };
    let mut points = Vec::new();
    let mut from = window.from;
    while from < window.to {
        let to = from
            .checked_add_signed(step)
            .map_or(window.to, |end| end.min(window.to));
        let bucket = Window { from, to };
        let parts: Vec<WorkflowSamples> = workflows
            .iter()
            .map(|wf| WorkflowSamples {
                workflow: wf.workflow.clone(),
                deploy: wf.deploy,
                samples: wf
                    .samples
                    .iter()
                    .filter(|s| bucket.contains(s.completed_at))
                    .cloned()
                    .collect(),
            })
            .collect();
        points.push((bucket, figures(&parts, &bucket)));
        from = to;
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn at(min: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + min * 60, 0)
            .single()
            .unwrap()
    }

    fn window() -> Window {
        Window {
            from: at(0),
            to: at(24 * 60),
        }
    }

    fn sample(id: &str, done: i64, conclusion: &str) -> Sample {
        Sample {
            id: id.into(),
            completed_at: at(done),
            started_at: Some(at(done - 2)),
            conclusion: Some(conclusion.into()),
            queued_ms: None,
            commit_at: Some(at(done - 10)),
        }
    }

    #[test]
    fn nearest_rank_is_the_smallest_value_covering_p_percent() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(nearest_rank(&v, 50), Some(5.0));
        assert_eq!(nearest_rank(&v, 95), Some(10.0));
        assert_eq!(nearest_rank(&[7.0], 95), Some(7.0));
        assert_eq!(nearest_rank(&[], 50), None);
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(nearest_rank(&v, 95), Some(19.0));
    }

    #[test]
    fn median_averages_the_middle_pair() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn deploy_names() {
        for name in ["Deploy to staging", "RELEASE", "prod-eu", "Production"] {
            assert!(is_deploy_name(name), "{name}");
        }
        assert!(!is_deploy_name("Build and test"));
    }

    #[test]
    fn episodes_start_at_a_failure_after_a_pass_and_end_at_the_next_pass() {
        // fail (opens the window) · fail · pass | pass · fail · cancelled · pass | fail (never ends)
        let mut s = vec![
            sample("1", 10, "failed"),
            sample("2", 20, "failed"),
            sample("3", 40, "passed"),
            sample("4", 50, "passed"),
            sample("5", 60, "failed"),
            sample("6", 65, "cancelled"),
            sample("7", 90, "passed"),
            sample("8", 100, "failed"),
        ];
        s.reverse(); // order of input does not matter
        assert_eq!(restore_episodes(&s), vec![30.0 * 60.0, 30.0 * 60.0]);
    }

    #[test]
    fn figures_of_a_deploy_and_a_build_workflow() {
        let deploy = WorkflowSamples {
            workflow: "1".into(),
            deploy: true,
            samples: vec![
                sample("a", 10, "passed"),
                sample("b", 20, "failed"),
                sample("c", 80, "passed"),
            ],
        };
        let build = WorkflowSamples {
            workflow: "2".into(),
            deploy: false,
            samples: vec![sample("d", 30, "passed"), sample("e", 40, "cancelled")],
        };
        let f = figures([&deploy, &build], &window());
        assert_eq!(f.jobs_total, 5);
        assert_eq!((f.passed, f.failed), (3, 1));
        assert_eq!(f.success_rate, Some(0.75));
        assert_eq!(
            f.duration_s,
            Percentiles {
                p50: Some(120.0),
                p95: Some(120.0)
            }
        );
        assert_eq!(f.queued_s, Percentiles::default());
        assert_eq!(f.deployments, 2);
        assert_eq!(f.deployment_frequency_per_day, 2.0);
        assert_eq!(f.change_failure_rate, Some(1.0 / 3.0));
        assert_eq!(f.mean_time_to_restore_s, Some(3600.0));
        assert_eq!(f.lead_time_s, Some(600.0));
        let none = figures([&build], &window());
        assert_eq!(none.deployments, 0);
        assert_eq!(none.change_failure_rate, None);
        assert_eq!(none.mean_time_to_restore_s, None);
        assert_eq!(none.lead_time_s, None);
    }

    #[test]
    fn lead_times_ignore_unknown_and_non_positive_commit_times() {
        let mut late = sample("b", 30, "passed");
        late.commit_at = Some(at(31));
        let mut unknown = sample("c", 40, "passed");
        unknown.commit_at = None;
        let wf = WorkflowSamples {
            workflow: "1".into(),
            deploy: true,
            samples: vec![sample("a", 20, "passed"), late, unknown],
        };
        assert_eq!(figures([&wf], &window()).lead_time_s, Some(600.0));
    }

    #[test]
    fn a_sample_is_a_completed_job_inside_the_window() {
        let job = |status: &str, done: Option<i64>| Job {
            id: "1".into(),
            status: Some(status.into()),
            completed_at: done.map(at),
            ..Job::default()
        };
        let w = window();
        assert!(Sample::of(&job("completed", Some(0)), &w).is_some());
        assert!(
            Sample::of(&job("completed", Some(24 * 60)), &w).is_none(),
            "`to` is excluded"
        );
        assert!(Sample::of(&job("completed", Some(-1)), &w).is_none());
        assert!(Sample::of(&job("in_progress", Some(5)), &w).is_none());
        assert!(Sample::of(&job("completed", None), &w).is_none());
    }

    proptest! {
        #[test]
        fn nearest_rank_covers_p_percent(mut v in proptest::collection::vec(-1e6f64..1e6, 1..200), p in 1u32..=100) {
            v.sort_by(f64::total_cmp);
            let x = nearest_rank(&v, p).unwrap();
            let at_or_below = v.iter().filter(|&&y| y <= x).count();
            prop_assert!(at_or_below * 100 >= p as usize * v.len());
            // and no smaller value of the set covers p %
            let below = v.iter().filter(|&&y| y < x).count();
            prop_assert!(below * 100 < p as usize * v.len());
        }

        #[test]
        fn rates_stay_between_zero_and_one(outcomes in proptest::collection::vec(0u8..4, 0..60)) {
            let samples: Vec<Sample> = outcomes.iter().enumerate().map(|(i, o)| {
                let c = ["passed", "failed", "cancelled", "skipped"][*o as usize];
                sample(&i.to_string(), i as i64 + 5, c)
            }).collect();
            let wf = WorkflowSamples { workflow: "1".into(), deploy: true, samples };
            let f = figures([&wf], &window());
            for r in [f.success_rate, f.change_failure_rate].into_iter().flatten() {
                prop_assert!((0.0..=1.0).contains(&r));
            }
            prop_assert_eq!(f.passed + f.failed <= f.jobs_total, true);
            prop_assert!(f.mean_time_to_restore_s.is_none_or(|m| m > 0.0));
        }

        #[test]
        fn a_series_splits_the_window_and_its_counts(
            jobs in proptest::collection::vec((0i64..24 * 60, 0u8..3), 0..80),
            step_min in 1i64..2000,
        ) {
            let samples: Vec<Sample> = jobs.iter().enumerate().map(|(i, (min, o))| {
                sample(&i.to_string(), *min, ["passed", "failed", "cancelled"][*o as usize])
            }).collect();
            let wf = WorkflowSamples { workflow: "1".into(), deploy: true, samples };
            let whole = figures([&wf], &window());
            let points = series([&wf], &window(), chrono::Duration::minutes(step_min));
            prop_assert_eq!(points.first().map(|(w, _)| w.from), Some(window().from));
            prop_assert_eq!(points.last().map(|(w, _)| w.to), Some(window().to));
            for pair in points.windows(2) {
                prop_assert_eq!(pair[0].0.to, pair[1].0.from);
            }
            let sum = |f: fn(&Figures) -> u64| points.iter().map(|(_, p)| f(p)).sum::<u64>();
            prop_assert_eq!(sum(|f| f.jobs_total), whole.jobs_total);
            prop_assert_eq!(sum(|f| f.passed), whole.passed);
            prop_assert_eq!(sum(|f| f.failed), whole.failed);
            prop_assert_eq!(sum(|f| f.deployments), whole.deployments);
        }
    }
}
