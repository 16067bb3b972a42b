//! Which backups a grandfather-father-son retention policy keeps: pure selection over the
//! backups' times, tested alone; the `prune_backups` job ([`crate::jobs::prune`]) acts on it.
//!
//! For each of days, ISO weeks (Monday to Sunday) and calendar months, all in UTC: walking the
//! backups newest first, the newest backup of each of the `keep_*` newest periods that have a
//! backup is kept. A backup is kept if any of the three keeps it. Besides, every backup of the
//! last [`RECENT_MS`] (24 hours) is kept, so a manual backup, or one taken before a move or a
//! restore, is not pruned at once by the next backup of the same day; and the newest backup is
//! always kept, so no policy (not even all zeros) leaves a tenant without its last backup.
//!
//! The choice is stable: pruning after every new backup keeps the same set as pruning once at
//! the end (a backup that is not the newest of its period never becomes it, periods only move
//! further back, and a backup that is no longer recent never becomes recent again).

use std::collections::BTreeSet;

use tenantgate_contract::settings::BackupRetention;
use uuid::Uuid;

const DAY_MS: i64 = 86_400_000;
/// Backups younger than this are always kept.
pub(crate) const RECENT_MS: i64 = DAY_MS;

/// The periods a backup falls in: (day, ISO week, month), each a number that grows with time.
type Periods = (i64, i64, i64);

/// The periods a backup at `at_ms` falls in.
fn periods(at_ms: i64) -> Periods {
    let day = at_ms.div_euclid(DAY_MS);
    // 1970-01-01 was a Thursday: shifting by three days starts weeks on Monday.
    let week = (day + 3).div_euclid(7);
    let date = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(day);
    let month = i64::from(date.year()) * 12 + i64::from(u8::from(date.month()));
    (day, week, month)
}

/// The ids of `backups` (id, time in ms, any order) that `policy` keeps at `now_ms`.
pub(crate) fn keep(
    policy: BackupRetention,
    backups: &[(Uuid, i64)],
    now_ms: i64,
) -> BTreeSet<Uuid> {
    let mut newest_first = backups.to_vec();
    // Ties on time are broken by id (UUIDv7: creation order), so the choice is deterministic.
    newest_first.sort_by_key(|&(id, at)| std::cmp::Reverse((at, id)));
    let mut kept = BTreeSet::new();
    if let Some((id, _)) = newest_first.first() {
        kept.insert(*id);
    }
    kept.extend(
        newest_first
            .iter()
            .filter(|(_, at)| now_ms - at < RECENT_MS)
            .map(|(id, _)| *id),
    );
    // (count, which of the periods: 0 day, 1 week, 2 month)
    let rules = [
        (policy.keep_daily, 0),
        (policy.keep_weekly, 1),
        (policy.keep_monthly, 2),
    ];
    for (count, which) in rules {
        let mut seen: Option<i64> = None;
        let mut left = count;
        for (id, at) in &newest_first {
            if left == 0 {
                break;
            }
            let p = periods(*at);
            let period = [p.0, p.1, p.2][which];
            if seen != Some(period) {
                seen = Some(period);
                kept.insert(*id);
                left -= 1;
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Milliseconds of `y-m-d hh:00` UTC.
    fn at(y: i32, m: u8, d: u8, h: u8) -> i64 {
        let date = time::Date::from_calendar_date(y, time::Month::try_from(m).unwrap(), d).unwrap();
        date.with_hms(h, 0, 0)
            .unwrap()
            .assume_utc()
            .unix_timestamp()
            * 1000
    }

    fn policy(d: u32, w: u32, m: u32) -> BackupRetention {
        BackupRetention::new(d, w, m).unwrap()
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn periods_follow_the_calendar() {
        // 2026-01-04 is a Sunday, 2026-01-05 a Monday.
        let (sun, mon) = (periods(at(2026, 1, 4, 23)), periods(at(2026, 1, 5, 0)));
        assert_eq!(mon.0, sun.0 + 1);
        assert_eq!(mon.1, sun.1 + 1, "a week starts on Monday");
        assert_eq!(mon.2, sun.2);
        let (dec, jan) = (periods(at(2025, 12, 31, 23)), periods(at(2026, 1, 1, 0)));
        assert_eq!(jan.2, dec.2 + 1);
        assert_eq!(jan.1, dec.1, "Wednesday and Thursday of one ISO week");
        // Before 1970 too.
        assert_eq!(periods(-1).0, -1);
    }

    #[test]
    fn daily_weekly_monthly_over_a_calendar() {
        // One backup a day at 02:00 from 2026-01-01 (Thursday) to 2026-03-15 (Sunday), and a
        // second one on 2026-03-15 at 14:00.
        let mut backups = Vec::new();
        let mut n = 0u128;
        let first = at(2026, 1, 1, 2);
        for day in 0..74 {
            n += 1;
            backups.push((id(n), first + day * DAY_MS));
        }
        n += 1;
        backups.push((id(n), at(2026, 3, 15, 14)));
        // Pruned a month later: nothing is recent.
        let kept = keep(policy(3, 2, 3), &backups, at(2026, 4, 15, 0));
        let times: BTreeSet<i64> = backups
            .iter()
            .filter(|(i, _)| kept.contains(i))
            .map(|(_, t)| *t)
            .collect();
        let expected: BTreeSet<i64> = [
            // Daily: the newest of 15 March (14:00), 14 and 13 March.
            at(2026, 3, 15, 14),
            at(2026, 3, 14, 2),
            at(2026, 3, 13, 2),
            // Weekly: the week of 9-15 March (its newest, 15 March 14:00, kept already) and
            // the week of 2-8 March (Sunday 8 March).
            at(2026, 3, 8, 2),
            // Monthly: March (kept already), February's last day and January's last day.
            at(2026, 2, 28, 2),
            at(2026, 1, 31, 2),
        ]
        .into();
        assert_eq!(times, expected);
    }

    #[test]
    fn the_newest_and_the_recent_are_kept_whatever_the_policy() {
        let backups = [(id(1), 10), (id(2), 20), (id(3), 20)];
        let later = 20 + RECENT_MS;
        assert_eq!(keep(policy(0, 0, 0), &backups, later), [id(3)].into());
        assert!(keep(policy(0, 0, 0), &[], later).is_empty());
        // Three backups of one day: the day's newest only, unless they are recent.
        assert_eq!(keep(policy(1, 0, 0), &backups, later), [id(3)].into());
        assert_eq!(
            keep(policy(1, 0, 0), &backups, later - 5),
            [id(2), id(3)].into()
        );
        assert_eq!(
            keep(policy(1, 0, 0), &backups, 25),
            [id(1), id(2), id(3)].into()
        );
    }

    proptest! {
        /// Pruning after every new backup keeps exactly what pruning once at the end keeps.
        #[test]
        fn pruning_as_you_go_equals_pruning_once(
            gaps in proptest::collection::vec(0i64..(40 * DAY_MS), 1..60),
            d in 0u32..5, w in 0u32..4, m in 0u32..4,
        ) {
            let policy = policy(d, w, m);
            let mut t = 1_700_000_000_000i64;
            let mut all = Vec::new();
            let mut live: Vec<(Uuid, i64)> = Vec::new();
            for (i, gap) in gaps.iter().enumerate() {
                t += gap;
                all.push((id(i as u128), t));
                live.push((id(i as u128), t));
                let kept = keep(policy, &live, t);
                live.retain(|(i, _)| kept.contains(i));
            }
            let once = keep(policy, &all, t);
            let live: BTreeSet<Uuid> = live.iter().map(|(i, _)| *i).collect();
            prop_assert_eq!(live, once);
        }

        /// Never more than one backup per kept period, and never more than the counts allow.
        #[test]
        fn keeps_at_most_the_counts(
            times in proptest::collection::vec(0i64..(400 * DAY_MS), 1..80),
            d in 0u32..6, w in 0u32..6, m in 0u32..6,
        ) {
            let backups: Vec<(Uuid, i64)> =
                times.iter().enumerate().map(|(i, t)| (id(i as u128), *t)).collect();
            let now = 400 * DAY_MS + RECENT_MS;
            let kept = keep(policy(d, w, m), &backups, now);
            prop_assert!(kept.len() <= (d + w + m).max(1) as usize);
        }
    }
}
