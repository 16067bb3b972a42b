//! When a tenant's scheduled backup is due: pure arithmetic over the clock, the tenant id and
//! the slot of its newest scheduled backup (read from the catalog).
//!
//! Each tenant has one slot per period, at a fixed offset into the period derived from its id
//! (SHA-256 of the id, modulo the period), so 10,000 tenants on a daily schedule start about one
//! every 8.6 s rather than all at midnight. A scheduled backup records its slot's start as its
//! `created_at`, so:
//!
//! - a slot is due when the tenant's newest scheduled backup is for an earlier slot: a slot
//!   whose backup exists (queued, running, completed or failed) is never taken twice, however
//!   often an admin restarts, and a unique index stops two admin processes from both taking it;
//! - a slot missed while no admin ran is taken when one runs again (once: only the latest
//!   missed slot, never one per missed period);
//! - a tenant that has never had a scheduled backup (the schedule was just switched on, or the
//!   tenant is new) starts at its first slot that begins while an admin runs, within
//!   [`first_window`] of the slot's start; otherwise switching the schedule on would start every
//!   tenant at once.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Where in each period (ms from the period's start, `0..period_ms`) `tenant`'s slot begins.
pub(crate) fn offset(tenant: Uuid, period_ms: i64) -> i64 {
    let digest = Sha256::digest(tenant.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // u64 → i128 keeps the modulo exact for any period.
    (i128::from(u64::from_be_bytes(first)) % i128::from(period_ms)) as i64
}

/// The start of the latest slot of `tenant` that began at or before `now_ms`.
pub(crate) fn slot_start(tenant: Uuid, period_ms: i64, now_ms: i64) -> i64 {
    let offset = offset(tenant, period_ms);
    now_ms - (now_ms - offset).rem_euclid(period_ms)
}

/// How late after its slot's start a tenant's first scheduled backup may still begin: a 24th
/// of the period (an hour on a daily schedule, 150 s on an hourly one), well above the
/// scheduler's tick.
pub(crate) fn first_window(period_ms: i64) -> i64 {
    period_ms / 24
}

/// The slot (its start) whose scheduled backup `tenant` is due for at `now_ms`, given the slot
/// of its newest scheduled backup; `None` when nothing is due (see the module docs).
pub(crate) fn due(
    tenant: Uuid,
    period_ms: i64,
    now_ms: i64,
    last_scheduled: Option<i64>,
) -> Option<i64> {
    let slot = slot_start(tenant, period_ms, now_ms);
    match last_scheduled {
        Some(last) if last >= slot => None,
        Some(_) => Some(slot),
        None => (now_ms - slot < first_window(period_ms)).then_some(slot),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const DAY: i64 = 86_400_000;
    const HOUR: i64 = 3_600_000;

    fn tenant(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn ten_thousand_tenants_spread_over_the_day() {
        // Slots per hour of the day: no hour holds more than twice its share.
        let mut per_hour = [0u32; 24];
        for n in 0..10_000u128 {
            let id = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + n);
            per_hour[(offset(id, DAY) / HOUR) as usize] += 1;
        }
        let share = 10_000 / 24;
        for (hour, n) in per_hour.iter().enumerate() {
            assert!(
                *n > share / 2 && *n < share * 2,
                "hour {hour}: {n} of 10000"
            );
        }
    }

    #[test]
    fn a_slot_is_taken_once_and_a_missed_one_once() {
        let t = tenant(42);
        let base = 1_767_225_600_000; // 2026-01-01T00:00:00Z
        let slot = base + offset(t, DAY);
        // Just before the first slot: nothing; at it: the first backup.
        assert_eq!(due(t, DAY, slot - 1, None), None);
        assert_eq!(due(t, DAY, slot, None), Some(slot));
        // Taken: not due again within the period, however often asked.
        for later in [slot, slot + 1, slot + HOUR, slot + DAY - 1] {
            assert_eq!(due(t, DAY, later, Some(slot)), None);
        }
        // The next period's slot.
        assert_eq!(due(t, DAY, slot + DAY, Some(slot)), Some(slot + DAY));
        // No admin ran for three days: one backup, for the latest slot.
        let back = slot + 3 * DAY + 5 * HOUR;
        assert_eq!(due(t, DAY, back, Some(slot)), Some(slot + 3 * DAY));
        assert_eq!(due(t, DAY, back, Some(slot + 3 * DAY)), None);
        // Never backed up and the slot long past: wait for the next slot.
        assert_eq!(due(t, DAY, slot + 2 * HOUR, None), None);
        assert_eq!(due(t, DAY, slot + DAY, None), Some(slot + DAY));
    }

    proptest! {
        /// Ticking through any stretch of time, at any tick interval shorter than the first
        /// window, takes exactly one backup per slot (after the first), each at its slot.
        #[test]
        fn ticking_takes_each_slot_exactly_once(
            id in any::<u128>(),
            start in 1_600_000_000_000i64..1_900_000_000_000,
            tick in 1_000i64..140_000,
            hourly in any::<bool>(),
        ) {
            let (t, period) = (tenant(id), if hourly { HOUR } else { DAY });
            let periods = if hourly { 30 } else { 3 };
            let mut last = None;
            let mut taken = Vec::new();
            let (mut now, mut last_tick) = (start, start);
            while now < start + periods * period {
                last_tick = now;
                if let Some(slot) = due(t, period, now, last) {
                    prop_assert!(slot <= now && now - slot < period);
                    taken.push(slot);
                    last = Some(slot);
                }
                now += tick;
            }
            let first = slot_start(t, period, start) + period;
            let expected: Vec<i64> = (0..periods)
                .map(|i| first + i * period)
                .filter(|s| *s <= last_tick)
                .collect();
            // The slot running when ticking began may be taken too, if it began just before.
            let taken_after: Vec<i64> = taken.iter().copied().filter(|s| *s >= first).collect();
            prop_assert_eq!(taken_after, expected);
            prop_assert!(taken.len() <= periods as usize + 1);
        }
    }
}
