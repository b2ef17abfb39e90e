//! Mapping a wall-clock time to instants in a time zone, with Ferry's daylight-saving rules made
//! explicit. The `cron` crate skips a wall time that falls into a spring-forward gap; a daily
//! 02:30 job in Europe/Berlin would then silently not run on the last Sunday of March. Ferry
//! instead runs it at the first instant after the gap (03:00 local). In a fall-back overlap a
//! wall time exists twice: a fixed-time schedule runs at the first occurrence only, an interval
//! schedule (hourly, every 15 minutes) runs at both, so it keeps its rhythm in elapsed time.

use chrono::offset::LocalResult;
use chrono::{DateTime, Duration, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// The longest spring-forward gap looked for: the largest real one is a whole day (Samoa, 2011).
const MAX_GAP_MINUTES: i64 = 3 * 24 * 60;

/// Remembers the last gap found so every wall time of one gap costs one look-up.
#[derive(Debug, Default)]
pub(crate) struct GapCache {
    /// (a wall time inside the gap, the first wall time after it, the instant the gap ends)
    last: Option<(NaiveDateTime, NaiveDateTime, DateTime<Utc>)>,
}

/// The instants at which `local` fires in `tz`: one normally, one at the end of a gap, one or
/// two in an overlap (two when `both_in_overlap`). Empty only for a gap longer than any real one.
pub(crate) fn instants(
    tz: Tz,
    local: NaiveDateTime,
    both_in_overlap: bool,
    cache: &mut GapCache,
) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => (Some(t.with_timezone(&Utc)), None),
        LocalResult::Ambiguous(first, second) => (
            Some(first.with_timezone(&Utc)),
            both_in_overlap.then(|| second.with_timezone(&Utc)),
        ),
        LocalResult::None => (gap_end(tz, local, cache), None),
    }
}

/// The first instant after the spring-forward gap that contains the wall time `local`.
fn gap_end(tz: Tz, local: NaiveDateTime, cache: &mut GapCache) -> Option<DateTime<Utc>> {
    if let Some((inside, after, end)) = cache.last
        && inside <= local
        && local < after
    {
        return Some(end);
    }
    // The first valid wall minute after `local`, then the exact instant within the minute before
    // it at which the new offset starts (real transitions are whole minutes; old LMT ones not).
    let mut first_valid = None;
    for minute in 1..=MAX_GAP_MINUTES {
        let probe = local.checked_add_signed(Duration::minutes(minute))?;
        if let Some(t) = tz.from_local_datetime(&probe).earliest() {
            first_valid = Some(t.with_timezone(&Utc));
            break;
        }
    }
    let valid = first_valid?;
    let new_offset = tz.offset_from_utc_datetime(&valid.naive_utc()).fix();
    let (mut lo, mut hi) = (valid.checked_sub_signed(Duration::seconds(60))?, valid);
    // Invariant: `hi` has the new offset, `lo` does not (or is where the search starts).
    while hi - lo > Duration::seconds(1) {
        let mid = lo + (hi - lo) / 2;
        if tz.offset_from_utc_datetime(&mid.naive_utc()).fix() == new_offset {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let after = hi.with_timezone(&tz).naive_local();
    cache.last = Some((local, after, hi));
    Some(hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(d: (i32, u32, u32), h: u32, m: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(d.0, d.1, d.2)
            .and_then(|d| d.and_hms_opt(h, m, 0))
            .unwrap_or_default()
    }

    #[test]
    fn gap_maps_to_its_end_and_overlap_to_first_or_both() {
        let berlin = chrono_tz::Europe::Berlin;
        let mut cache = GapCache::default();
        let (a, b) = instants(berlin, at((2026, 3, 29), 2, 30), false, &mut cache);
        assert_eq!(
            a.map(|t| t.to_rfc3339()).as_deref(),
            Some("2026-03-29T01:00:00+00:00")
        );
        assert_eq!(b, None);
        let (a, b) = instants(berlin, at((2026, 10, 25), 2, 30), false, &mut cache);
        assert_eq!(
            a.map(|t| t.to_rfc3339()).as_deref(),
            Some("2026-10-25T00:30:00+00:00")
        );
        assert_eq!(b, None);
        let (_, b) = instants(berlin, at((2026, 10, 25), 2, 30), true, &mut cache);
        assert_eq!(
            b.map(|t| t.to_rfc3339()).as_deref(),
            Some("2026-10-25T01:30:00+00:00")
        );
    }

    #[test]
    fn whole_day_gap() {
        // Samoa skipped 2011-12-30 entirely when it moved across the date line.
        let apia = chrono_tz::Pacific::Apia;
        let mut cache = GapCache::default();
        let (a, _) = instants(apia, at((2011, 12, 30), 12, 0), false, &mut cache);
        let local = a.map(|t| t.with_timezone(&apia).naive_local());
        assert_eq!(local, Some(at((2011, 12, 31), 0, 0)));
    }
}
