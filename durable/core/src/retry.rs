//! [`RetryPolicy`] and the retry loop of
//! [`OrchestrationContext::call_activity_with_retry`]: each attempt is a task of its own,
//! waits between attempts are durable timers, and timeouts are durable timers raced
//! against the attempt — so a retried call survives restarts and replays the same way.

use crate::context::OrchestrationContext;
use crate::error::{Error, ErrorKind};
use crate::tasks::Either;
use durable_types::{Attempt, Json, Timestamp};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// How [`OrchestrationContext::call_activity_with_retry`] retries.
///
/// The delay before retry `n` (after attempt `n` failed) is
/// `first_interval * backoff_coefficient^(n-1)`, capped at `max_interval`. An error is
/// retried unless its kind is in `non_retryable` or `retry_if` says no; no attempt starts
/// after `timeout`, and an attempt running at that moment is cancelled.
///
/// ```
/// use durable::{ErrorKind, RetryPolicy};
/// use std::time::Duration;
/// let policy = RetryPolicy {
///     max_attempts: 5,
///     first_interval: Duration::from_secs(1),
///     backoff_coefficient: 2.0,
///     // A wrong input stays wrong: fail at once.
///     non_retryable: &[ErrorKind::Serialization],
///     // Give up on the whole call after two minutes, each attempt after thirty seconds.
///     timeout: Some(Duration::from_secs(120)),
///     attempt_timeout: Some(Duration::from_secs(30)),
///     ..RetryPolicy::default()
/// };
/// assert_eq!(policy.delay_before_retry(3), Duration::from_secs(4));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The delay before the first retry.
    pub first_interval: Duration,
    /// The factor by which each delay grows.
    pub backoff_coefficient: f64,
    /// The longest delay.
    pub max_interval: Duration,
    /// The longest the whole call may take, waits included, measured on the
    /// orchestration's clock from the first attempt. When it passes, the attempt running
    /// is cancelled and the call fails with [`ErrorKind::TimedOut`]; no retry starts that
    /// would begin after it. `None`: no limit.
    pub timeout: Option<Duration>,
    /// The longest one attempt may take. An attempt that takes longer is cancelled and
    /// fails with [`ErrorKind::TimedOut`], which is retried like any other failure (list
    /// `TimedOut` in `non_retryable` to stop at the first). `None`: no limit.
    pub attempt_timeout: Option<Duration>,
    /// Kinds of the activity's own error that no retry can fix: the call fails at once.
    /// The activity chooses its error's kind with [`Error::new`].
    pub non_retryable: &'static [ErrorKind],
    /// Decides, for each failed attempt, whether to retry: given the error the attempt
    /// failed with (of kind `ActivityFailed`, the activity's own error as its
    /// [`cause`](Error::cause), or `TimedOut`). `None`: retry every error not listed in
    /// `non_retryable`.
    pub retry_if: Option<fn(&Error) -> bool>,
}

impl Default for RetryPolicy {
    /// Three attempts, one second apart, doubling, at most an hour; every error retried;
    /// no timeouts.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            first_interval: Duration::from_secs(1),
            backoff_coefficient: 2.0,
            max_interval: Duration::from_secs(3600),
            timeout: None,
            attempt_timeout: None,
            non_retryable: &[],
            retry_if: None,
        }
    }
}

impl RetryPolicy {
    /// A policy of `max_attempts` attempts with `first_interval` before the first retry,
    /// doubling after that.
    pub fn new(max_attempts: u32, first_interval: Duration) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            first_interval,
            ..RetryPolicy::default()
        }
    }

    /// The delay after failed attempt `attempt` (1-based), before the next one.
    pub fn delay_before_retry(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let factor = self.backoff_coefficient.max(0.0).powi(exponent);
        let seconds = self.first_interval.as_secs_f64() * factor;
        let max = self.max_interval.as_secs_f64();
        if seconds.is_finite() && seconds < max {
            Duration::from_secs_f64(seconds.max(0.0))
        } else {
            self.max_interval
        }
    }

    /// Whether a failed attempt's `error` is worth another attempt (the number of attempts
    /// and the timeout aside).
    pub fn should_retry(&self, error: &Error) -> bool {
        let own_kind = error.cause().map_or(error.kind(), |cause| cause.kind());
        !self.non_retryable.contains(&own_kind) && self.retry_if.is_none_or(|retry| retry(error))
    }
}

/// Runs activity `name` with `input` until an attempt succeeds or `policy` gives up.
pub(crate) async fn call_with_retry<T: DeserializeOwned>(
    ctx: OrchestrationContext,
    name: &'static str,
    input: Json,
    policy: RetryPolicy,
) -> Result<T, Error> {
    let started = ctx.now();
    let deadline = policy
        .timeout
        .map(|timeout| (started.saturating_add(timeout), timeout));
    let mut first = None;
    let mut number = 1;
    loop {
        let retry = first.map(|first| Attempt { first, number });
        let task = ctx.schedule_activity::<T>(name, input.clone(), retry);
        if first.is_none() {
            first = task.task_id();
        }
        let error = match attempt(&ctx, name, task, &policy, deadline).await {
            Ok(output) => return Ok(output),
            Err(Ended::Failed(error)) => error,
            Err(Ended::GaveUp(error)) => return Err(error),
        };
        if number >= policy.max_attempts.max(1) || !policy.should_retry(&error) {
            return Err(error);
        }
        let delay = policy.delay_before_retry(number);
        if let Some((deadline, timeout)) = deadline
            && ctx.now().saturating_add(delay) >= deadline
        {
            return Err(gave_up(name, number, timeout, error));
        }
        if !delay.is_zero() {
            ctx.sleep(delay).await?;
        }
        number += 1;
    }
}

/// How an attempt that did not succeed ended.
enum Ended {
    /// It failed (or ran out of its own time): the policy decides whether to retry.
    Failed(Error),
    /// The call's time ran out: no retry.
    GaveUp(Error),
}

/// One attempt, raced against the attempt's and the call's timeouts (whichever is
/// sooner); the loser of the race is cancelled.
async fn attempt<T: DeserializeOwned>(
    ctx: &OrchestrationContext,
    name: &str,
    task: crate::tasks::DurableTask<T>,
    policy: &RetryPolicy,
    deadline: Option<(Timestamp, Duration)>,
) -> Result<T, Ended> {
    let attempt_due = policy
        .attempt_timeout
        .map(|timeout| ctx.now().saturating_add(timeout));
    let call_due = deadline.map(|(due, _)| due);
    let due = match (attempt_due, call_due) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (due, None) | (None, due) => due,
    };
    let Some(due) = due else {
        return task.await.map_err(Ended::Failed);
    };
    let timer = ctx.create_timer(due.to_system_time());
    match ctx.select(task, timer).await {
        Either::Left(outcome) => outcome.map_err(Ended::Failed),
        Either::Right(Err(error)) => Err(Ended::GaveUp(error)),
        Either::Right(Ok(())) if Some(due) == call_due => {
            let (_, timeout) = deadline.unwrap_or((due, Duration::ZERO));
            Err(Ended::GaveUp(Error::new(
                ErrorKind::TimedOut,
                format!(
                    "activity `{name}` did not succeed within its retry timeout of {timeout:?}; the attempt running was cancelled"
                ),
            )))
        }
        Either::Right(Ok(())) => Err(Ended::Failed(Error::new(
            ErrorKind::TimedOut,
            format!(
                "an attempt of activity `{name}` did not finish within its attempt timeout of {:?} and was cancelled",
                policy.attempt_timeout.unwrap_or_default()
            ),
        ))),
    }
}

/// The error of a call whose next retry would start after its timeout: the last
/// attempt's error is its cause.
fn gave_up(name: &str, attempts: u32, timeout: Duration, last: Error) -> Error {
    Error::caused_by(
        ErrorKind::TimedOut,
        format!(
            "activity `{name}` did not succeed in {attempts} attempts within its retry timeout of {timeout:?}"
        ),
        last.into_failure(),
    )
}
