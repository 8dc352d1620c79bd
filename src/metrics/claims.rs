//! The type of every known series, claimed before a batch is logged so two concurrent batches
//! can never log different types for one new series.
//!
//! A claim on a new series is provisional until a batch holding it is logged: several batches
//! may hold one (the first made it, the others found it), and only when none of them got
//! logged does it go away again. Before, the batch that made a claim gave it back whenever its
//! own write failed or turned out a duplicate, even after another batch of the same type had
//! been logged on the strength of it: the series was then logged with no claimed type, and a
//! third batch could claim it as another type.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::batch::{BatchConflict, EventBatch};
use super::{MetricType, SeriesKey};

#[derive(Debug)]
struct Claim {
    kind: MetricType,
    /// A batch holding it was logged (or it came from the aggregates): it stays.
    settled: bool,
    /// Batches holding it that have not ended yet.
    holders: u32,
}

/// Every known series' type, settled or provisional.
#[derive(Debug, Default)]
pub struct TypeClaims {
    claims: Mutex<HashMap<SeriesKey, Claim>>,
}

/// The provisional claims one batch holds; give them back with [`TypeClaims::release`].
#[derive(Debug, Default)]
#[must_use = "release the claims once the batch is logged or not"]
pub struct Held(Vec<SeriesKey>);

impl Held {
    /// Takes on another batch's claims, when the two are logged as one entry.
    pub fn absorb(&mut self, other: Held) {
        self.0.extend(other.0);
    }
}

impl TypeClaims {
    /// Claims already settled: the series the aggregates hold.
    pub fn settled(known: impl IntoIterator<Item = (SeriesKey, MetricType)>) -> Self {
        let claims = known
            .into_iter()
            .map(|(key, kind)| {
                let claim = Claim {
                    kind,
                    settled: true,
                    holders: 0,
                };
                (key, claim)
            })
            .collect();
        Self {
            claims: Mutex::new(claims),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SeriesKey, Claim>> {
        self.claims
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Claims every series of `batch` with its type, all or none: the first series already
    /// known as another type refuses the batch.
    pub fn claim(&self, batch: &EventBatch) -> Result<Held, BatchConflict> {
        let mut claims = self.lock();
        let mut held = Vec::new();
        for series in batch.series() {
            match claims.get_mut(&series.key) {
                Some(claim) if claim.kind != series.kind => {
                    let conflict = BatchConflict {
                        index: series.first,
                        key: series.key.clone(),
                        existing: claim.kind,
                        got: series.kind,
                    };
                    end(&mut claims, &held, false);
                    return Err(conflict);
                }
                Some(claim) if claim.settled => {}
                Some(claim) => {
                    claim.holders += 1;
                    held.push(series.key.clone());
                }
                None => {
                    let claim = Claim {
                        kind: series.kind,
                        settled: false,
                        holders: 1,
                    };
                    claims.insert(series.key.clone(), claim);
                    held.push(series.key.clone());
                }
            }
        }
        Ok(Held(held))
    }

    /// Ends a batch's provisional claims: settled when it was `logged`, else dropped unless
    /// another batch still holds them or got logged with them.
    pub fn release(&self, held: Held, logged: bool) {
        if !held.0.is_empty() {
            end(&mut self.lock(), &held.0, logged);
        }
    }

    pub fn contains(&self, key: &SeriesKey) -> bool {
        self.lock().contains_key(key)
    }

    /// Forgets a deleted series.
    pub fn remove(&self, key: &SeriesKey) {
        self.lock().remove(key);
    }
}

fn end(claims: &mut HashMap<SeriesKey, Claim>, keys: &[SeriesKey], logged: bool) {
    for key in keys {
        let Some(claim) = claims.get_mut(key) else {
            continue;
        };
        claim.holders = claim.holders.saturating_sub(1);
        claim.settled |= logged;
        if !claim.settled && claim.holders == 0 {
            claims.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Event;

    fn event(name: &str, kind: MetricType) -> Event {
        Event {
            key: SeriesKey::parse(name).unwrap(),
            kind,
            value: 1.0,
        }
    }

    fn batch(name: &str, kind: MetricType) -> EventBatch {
        EventBatch::from_events(vec![event(name, kind)]).unwrap()
    }

    #[test]
    fn a_claim_another_batch_was_logged_with_outlives_its_maker_failing() {
        let claims = TypeClaims::default();
        let maker = claims.claim(&batch("new", MetricType::Counter)).unwrap();
        let joiner = claims.claim(&batch("new", MetricType::Counter)).unwrap();
        claims.release(joiner, true);
        claims.release(maker, false);
        let conflict = claims
            .claim(&batch("new", MetricType::Gauge))
            .expect_err("the series was logged as a counter");
        assert_eq!(conflict.existing, MetricType::Counter);
    }

    #[test]
    fn a_claim_no_batch_was_logged_with_goes_away() {
        let claims = TypeClaims::default();
        let first = claims.claim(&batch("new", MetricType::Counter)).unwrap();
        let second = claims.claim(&batch("new", MetricType::Counter)).unwrap();
        claims.release(first, false);
        assert!(
            claims.claim(&batch("new", MetricType::Gauge)).is_err(),
            "still held by the second batch"
        );
        claims.release(second, false);
        assert!(!claims.contains(&SeriesKey::parse("new").unwrap()));
        let gauge = claims.claim(&batch("new", MetricType::Gauge)).unwrap();
        claims.release(gauge, true);
    }

    #[test]
    fn a_refused_batch_gives_back_only_what_it_claimed() {
        let claims = TypeClaims::settled([(SeriesKey::parse("old").unwrap(), MetricType::Gauge)]);
        let mixed = EventBatch::from_events(vec![
            event("fresh", MetricType::Counter),
            event("old", MetricType::Counter),
        ])
        .unwrap();
        let conflict = claims.claim(&mixed).expect_err("old is a gauge");
        assert_eq!((conflict.index, conflict.existing), (1, MetricType::Gauge));
        assert!(!claims.contains(&SeriesKey::parse("fresh").unwrap()));
        assert!(claims.contains(&SeriesKey::parse("old").unwrap()));
    }
}
