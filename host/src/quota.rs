//! Quotas (`[[quotas]]`): request-rate limits (token buckets, via `governor`) and
//! in-flight limits, each kept per principal, per namespace, or per pair, for the calls
//! a quota's principals and namespaces cover. A call over a limit is
//! `RESOURCE_EXHAUSTED` naming the quota, with `retry-after-ms` in its metadata (for
//! rate limits). Budgets start afresh when the config reloads.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::{DefaultKeyedRateLimiter, Quota as RateQuota, RateLimiter};
use serde::Deserialize;
use tonic::Status;

use crate::auth::rules::{glob_matches, Matcher, Principal};
use crate::shared::ConfigError;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaEntry {
    /// Namespaces (names or globs) covered; each has its own budget.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Principals covered (as in `[[auth.rules]]`); each has its own budget.
    #[serde(default)]
    pub principals: Vec<String>,
    /// Sustained calls per second.
    pub requests_per_second: Option<u32>,
    /// Calls allowed at once above the sustained rate (default: one second's worth).
    pub burst: Option<u32>,
    /// Calls running at once.
    pub max_in_flight: Option<u32>,
}

/// Calls running now, per budget key.
type InFlight = Arc<Mutex<HashMap<String, u32>>>;

struct Compiled {
    index: usize,
    /// As configured: a reload keeps the budgets of an entry it finds unchanged.
    entry: QuotaEntry,
    namespaces: Vec<String>,
    principals: Vec<Matcher>,
    rate: Option<(u32, Arc<DefaultKeyedRateLimiter<String>>)>,
    in_flight: Option<(u32, InFlight)>,
}

/// Every configured quota with its live budgets.
pub struct Quotas {
    quotas: Vec<Compiled>,
    /// Calls admitted, to forget idle rate budgets now and then.
    admitted: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Quotas({})", self.quotas.len())
    }
}

/// Held for the length of a call: its place in each in-flight budget.
pub struct Admission {
    held: Vec<(InFlight, String)>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        for (counts, key) in &self.held {
            let mut counts = counts.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(count) = counts.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(key);
                }
            }
        }
    }
}

impl Quotas {
    pub fn compile(entries: &[QuotaEntry], auth_configured: bool) -> Result<Quotas, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut quotas = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            let at = format!("quotas[{index}]");
            if entry.namespaces.is_empty() && entry.principals.is_empty() {
                errors.push(ConfigError::new(
                    &at,
                    "names neither namespaces nor principals, so it covers nothing",
                    "add namespaces = [\"*\"] (a budget per namespace) and/or principals = [\"*\"] (per caller)",
                ));
            }
            if !entry.principals.is_empty() && !auth_configured {
                errors.push(ConfigError::new(
                    format!("{at}.principals"),
                    "principals are known only with [auth]",
                    "configure [auth], or keep only namespaces in this quota",
                ));
            }
            let principals = Matcher::parse_all(&entry.principals, &format!("{at}.principals"), &mut errors);
            let nonzero = |key: &str, value: Option<u32>, errors: &mut Vec<ConfigError>| match value {
                Some(0) => {
                    errors.push(ConfigError::new(
                        format!("{at}.{key}"),
                        "must be at least 1",
                        "leave it out for no limit",
                    ));
                    None
                }
                other => other.and_then(NonZeroU32::new),
            };
            let rate = nonzero("requests_per_second", entry.requests_per_second, &mut errors);
            let burst = nonzero("burst", entry.burst, &mut errors);
            let in_flight = nonzero("max_in_flight", entry.max_in_flight, &mut errors);
            if entry.requests_per_second.is_none() && entry.max_in_flight.is_none() {
                errors.push(ConfigError::new(
                    &at,
                    "sets no limit",
                    "set requests_per_second and/or max_in_flight",
                ));
            }
            if burst.is_some() && rate.is_none() {
                errors.push(ConfigError::new(
                    format!("{at}.burst"),
                    "needs requests_per_second",
                    "set requests_per_second",
                ));
            }
            quotas.push(Compiled {
                index,
                entry: entry.clone(),
                namespaces: entry.namespaces.clone(),
                principals,
                rate: rate.map(|rate| {
                    let quota = RateQuota::per_second(rate).allow_burst(burst.unwrap_or(rate));
                    (rate.get(), Arc::new(RateLimiter::keyed(quota)))
                }),
                in_flight: in_flight.map(|limit| (limit.get(), Arc::new(Mutex::new(HashMap::new())))),
            });
        }
        if errors.is_empty() {
            Ok(Quotas { quotas, admitted: std::sync::atomic::AtomicU64::new(0) })
        } else {
            Err(errors)
        }
    }

    /// Takes over the live budgets of every quota `running` has with the same settings,
    /// so a reload neither refills a spent rate budget nor forgets the calls in flight.
    pub fn keep_budgets_of(&mut self, running: &Quotas) {
        for quota in &mut self.quotas {
            if let Some(same) = running.quotas.iter().find(|old| old.entry == quota.entry) {
                quota.rate.clone_from(&same.rate);
                quota.in_flight.clone_from(&same.in_flight);
            }
        }
    }

    /// Admits a call by `principal` (None without `[auth]`) on `namespace`, or says
    /// which quota it is over.
    pub fn admit(&self, principal: Option<&Principal>, namespace: &str) -> Result<Admission, Status> {
        // A budget per principal could otherwise grow with every caller ever seen.
        if self.admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 4096 == 4095 {
            for quota in &self.quotas {
                if let Some((_, limiter)) = &quota.rate {
                    limiter.retain_recent();
                }
            }
        }
        let mut admission = Admission { held: Vec::new() };
        for quota in &self.quotas {
            let Some(key) = quota.key(principal, namespace) else { continue };
            if let Some((rate, limiter)) = &quota.rate {
                if let Err(not_until) = limiter.check_key(&key) {
                    let wait = not_until.wait_time_from(governor::clock::Clock::now(
                        &governor::clock::DefaultClock::default(),
                    ));
                    return Err(over(
                        quota.index,
                        format!("{rate} calls per second for {}", quota.whom(principal, namespace)),
                        Some(wait.as_millis().max(1) as u64),
                    ));
                }
            }
            if let Some((limit, counts)) = &quota.in_flight {
                let mut counts_now = counts.lock().unwrap_or_else(|e| e.into_inner());
                let count = counts_now.entry(key.clone()).or_insert(0);
                if *count >= *limit {
                    drop(counts_now);
                    return Err(over(
                        quota.index,
                        format!("{limit} calls at once for {}", quota.whom(principal, namespace)),
                        None,
                    ));
                }
                *count += 1;
                drop(counts_now);
                admission.held.push((counts.clone(), key));
            }
        }
        Ok(admission)
    }
}

impl Compiled {
    /// The budget a call draws on, if the quota covers it.
    fn key(&self, principal: Option<&Principal>, namespace: &str) -> Option<String> {
        let mut key = String::new();
        if !self.namespaces.is_empty() {
            if !self.namespaces.iter().any(|glob| glob_matches(glob, namespace)) {
                return None;
            }
            key.push_str(namespace);
        }
        if !self.principals.is_empty() {
            let principal = principal?;
            if !self.principals.iter().any(|matcher| matcher.matches(principal)) {
                return None;
            }
            key.push('\0');
            key.push_str(&principal.display);
        }
        Some(key)
    }

    fn whom(&self, principal: Option<&Principal>, namespace: &str) -> String {
        match (self.namespaces.is_empty(), principal.filter(|_| !self.principals.is_empty())) {
            (false, Some(principal)) => format!("{} on namespace '{namespace}'", principal.display),
            (false, None) => format!("namespace '{namespace}'"),
            (true, Some(principal)) => principal.display.clone(),
            (true, None) => "this caller".to_owned(),
        }
    }
}

fn over(index: usize, limit: String, retry_after_ms: Option<u64>) -> Status {
    let hint = retry_after_ms.map(|ms| format!("; retry in {ms} ms")).unwrap_or_default();
    let mut status = Status::resource_exhausted(format!("over quotas[{index}]: at most {limit}{hint}"));
    status.metadata_mut().insert("prism-retryable", tonic::metadata::MetadataValue::from_static("true"));
    if let Some(ms) = retry_after_ms {
        status
            .metadata_mut()
            .insert("retry-after-ms", ms.to_string().parse().expect("digits are valid metadata"));
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(entries: &[QuotaEntry]) -> Quotas {
        Quotas::compile(entries, true).unwrap()
    }

    fn entry(
        namespaces: &[&str],
        principals: &[&str],
        rate: Option<u32>,
        in_flight: Option<u32>,
    ) -> QuotaEntry {
        QuotaEntry {
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            principals: principals.iter().map(|s| s.to_string()).collect(),
            requests_per_second: rate,
            burst: None,
            max_in_flight: in_flight,
        }
    }

    fn key_principal(name: &str) -> Principal {
        Principal {
            display: format!("api_key:{name}"),
            identity: crate::auth::rules::Identity::ApiKey { name: name.into() },
        }
    }

    #[test]
    fn a_rate_budget_is_kept_per_namespace_and_refuses_with_a_retry_hint() {
        let quotas = quotas(&[entry(&["orders-*"], &[], Some(5), None)]);
        for _ in 0..5 {
            quotas.admit(None, "orders-eu").unwrap();
        }
        let status = quotas.admit(None, "orders-eu").err().expect("the sixth call in a second");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status
            .message()
            .starts_with("over quotas[0]: at most 5 calls per second for namespace 'orders-eu'; retry in"));
        assert!(status.metadata().get("retry-after-ms").is_some());
        quotas.admit(None, "orders-us").expect("another namespace has its own budget");
        quotas.admit(None, "billing").expect("not covered");
    }

    #[test]
    fn in_flight_budgets_are_per_principal_and_freed_when_the_call_ends() {
        let quotas = quotas(&[entry(&[], &["*"], None, Some(2))]);
        let (a, b) = (key_principal("a"), key_principal("b"));
        let first = quotas.admit(Some(&a), "x").unwrap();
        let _second = quotas.admit(Some(&a), "y").unwrap();
        let status = quotas.admit(Some(&a), "z").err().expect("a third at once");
        assert_eq!(status.message(), "over quotas[0]: at most 2 calls at once for api_key:a");
        let _other = quotas.admit(Some(&b), "x").expect("b has its own budget");
        drop(first);
        quotas.admit(Some(&a), "z").expect("a call ended");
        assert!(quotas.admit(None, "x").is_ok(), "no principal: a principal quota does not cover it");
    }

    #[test]
    fn config_errors() {
        let errors = Quotas::compile(&[entry(&[], &[], None, None)], true).err().unwrap();
        assert_eq!(errors.len(), 2, "{errors:?}");
        let errors = Quotas::compile(&[entry(&[], &["*"], Some(1), None)], false).err().unwrap();
        assert!(errors[0].message.contains("[auth]"), "{errors:?}");
        let errors = Quotas::compile(&[entry(&["*"], &[], Some(0), None)], false).err().unwrap();
        assert!(errors[0].key.ends_with("requests_per_second"), "{errors:?}");
    }

    #[test]
    fn a_reload_keeps_the_budgets_of_unchanged_quotas_and_starts_changed_ones_afresh() {
        let running =
            quotas(&[entry(&["default"], &[], Some(1), None), entry(&["jobs"], &[], None, Some(1))]);
        running.admit(None, "default").expect("the one call a second");
        let held = running.admit(None, "jobs").expect("the one call at once");

        let mut reloaded =
            quotas(&[entry(&["default"], &[], Some(1), None), entry(&["jobs"], &[], None, Some(1))]);
        reloaded.keep_budgets_of(&running);
        assert!(reloaded.admit(None, "default").is_err(), "the spent rate budget stays spent");
        assert!(reloaded.admit(None, "jobs").is_err(), "the call in flight still counts");
        drop(held);
        reloaded.admit(None, "jobs").expect("its place is free once it ends");

        let mut changed = quotas(&[entry(&["default"], &[], Some(2), None)]);
        changed.keep_budgets_of(&running);
        changed.admit(None, "default").expect("a changed quota starts with a full budget");
    }
}
