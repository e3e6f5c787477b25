//! Which Buddy pages to fetch for one unified page of an offset-paged list.
//!
//! Buddy pages by `page` (1-based) and `per_page` (≤ 50), so one call covers the aligned
//! window `[(page-1)·per_page, page·per_page)`. A unified page is the window
//! `[offset, offset+limit)`, with `offset` a multiple of `limit` (the position only ever
//! advances by `limit`, and the limit is bound into the cursor). [`plan`] tiles that window
//! *exactly* with the fewest aligned Buddy pages, so nothing fetched is thrown away and
//! nothing is fetched twice:
//!
//! * `limit ≤ 50`: one call, `per_page = limit`, `page = offset/limit + 1`. Pages never
//!   straddle, because offset is a multiple of limit.
//! * `limit > 50`: any exact tiling needs at least `ceil(limit/50)` calls. That bound is
//!   reached whenever 50 (or another size ≤ 50 with `ceil(limit/50)` parts) fits the
//!   alignment — every multiple of 50 (100, 1000: `limit/50` calls of 50), and most others.
//!   Where it cannot be (e.g. `limit = 99` at offset 99 needs 33+44+22), a shortest-path
//!   search over segment sizes finds the true minimum: `O(limit · 50)` steps, ≤ 50k.

/// Buddy's largest page size.
pub const MAX_PER_PAGE: u32 = 50;

/// Pages read of one list before giving up: a Buddy that ignores `page` and always
/// answers a full page would otherwise be paged forever (1,000 pages of 50: far more
/// projects or pipelines than a workspace holds).
pub const MAX_PAGES: u64 = 1_000;

/// One Buddy list call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCall {
    /// 1-based Buddy page.
    pub page: u64,
    pub per_page: u32,
}

impl PageCall {
    /// Offset of the first item this call returns.
    pub fn start(&self) -> u64 {
        (self.page - 1) * u64::from(self.per_page)
    }
}

/// The fewest aligned pages of at most `max_per_page` items that cover exactly
/// `[offset, offset + len)`, in order. Among equally short plans, earlier calls are as
/// large as possible.
pub fn plan(offset: u64, len: u32, max_per_page: u32) -> Vec<PageCall> {
    let max = max_per_page.max(1);
    let len_us = len as usize;
    if len == 0 {
        return Vec::new();
    }
    // Fast path: the whole window in one aligned call.
    if len <= max && offset.is_multiple_of(u64::from(len)) {
        return vec![PageCall {
            page: offset / u64::from(len) + 1,
            per_page: len,
        }];
    }
    // best[i] = (calls needed to tile [offset+i, offset+len), first segment size).
    let mut best: Vec<(u32, u32)> = vec![(u32::MAX, 0); len_us + 1];
    best[len_us] = (0, 0);
    for i in (0..len_us).rev() {
        let at = offset + i as u64;
        let longest = max.min((len_us - i) as u32);
        for size in (1..=longest).rev() {
            if !at.is_multiple_of(u64::from(size)) {
                continue;
            }
            let rest = best[i + size as usize].0;
            if rest != u32::MAX && rest + 1 < best[i].0 {
                best[i] = (rest + 1, size);
            }
        }
    }
    let mut calls = Vec::with_capacity(best[0].0 as usize);
    let mut i = 0usize;
    while i < len_us {
        let size = best[i].1;
        let at = offset + i as u64;
        calls.push(PageCall {
            page: at / u64::from(size) + 1,
            per_page: size,
        });
        i += size as usize;
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check_tiling(offset: u64, len: u32, max: u32, calls: &[PageCall]) {
        let mut at = offset;
        for c in calls {
            assert!(c.per_page >= 1 && c.per_page <= max, "{c:?}");
            assert_eq!(c.start(), at, "aligned and contiguous: {calls:?}");
            at += u64::from(c.per_page);
        }
        assert_eq!(at, offset + u64::from(len), "exact cover");
    }

    /// Breadth-first search over exact tilings, as an independent oracle.
    fn brute_force_min(offset: u64, len: u32, max: u32) -> u32 {
        let end = offset + u64::from(len);
        let mut frontier = vec![offset];
        let mut steps = 0;
        loop {
            if frontier.contains(&end) {
                return steps;
            }
            let mut next = Vec::new();
            for &at in &frontier {
                for size in 1..=max {
                    let to = at + u64::from(size);
                    if at % u64::from(size) == 0 && to <= end && !next.contains(&to) {
                        next.push(to);
                    }
                }
            }
            frontier = next;
            steps += 1;
        }
    }

    #[test]
    fn small_limits_are_one_aligned_call() {
        assert_eq!(
            plan(0, 37, 50),
            vec![PageCall {
                page: 1,
                per_page: 37
            }]
        );
        assert_eq!(
            plan(37 * 135, 37, 50),
            vec![PageCall {
                page: 136,
                per_page: 37
            }]
        );
        assert_eq!(
            plan(100, 50, 50),
            vec![PageCall {
                page: 3,
                per_page: 50
            }]
        );
    }

    #[test]
    fn multiples_of_fifty_use_full_pages() {
        let calls = plan(1000, 1000, 50);
        assert_eq!(calls.len(), 20);
        assert!(calls.iter().all(|c| c.per_page == 50));
        assert_eq!(plan(200, 100, 50).len(), 2);
    }

    #[test]
    fn awkward_limits() {
        // 99 at offset 99: no 2-call tiling exists (50 and 49 do not divide 99).
        let calls = plan(99, 99, 50);
        check_tiling(99, 99, 50, &calls);
        assert_eq!(calls.len(), 3);
        assert_eq!(brute_force_min(99, 99, 50), 3);
        // 120 at offset 120: 40+40+40.
        assert_eq!(plan(120, 120, 50).len(), 3);
    }

    proptest! {
        #[test]
        fn plans_tile_exactly_and_minimally(k in 0u64..40, len in 1u32..120, max in 1u32..60) {
            let offset = k * u64::from(len);
            let calls = plan(offset, len, max);
            check_tiling(offset, len, max, &calls);
            prop_assert!(calls.len() as u32 >= len.div_ceil(max));
            prop_assert_eq!(calls.len() as u32, brute_force_min(offset, len, max));
            if len <= max {
                prop_assert_eq!(calls.len(), 1);
            }
        }

        #[test]
        fn any_offset_tiles_exactly(offset in 0u64..5000, len in 1u32..200) {
            let calls = plan(offset, len, MAX_PER_PAGE);
            check_tiling(offset, len, MAX_PER_PAGE, &calls);
        }

        #[test]
        fn multiples_of_fifty_reach_the_bound(k in 0u64..100, n in 1u32..=20) {
            let len = n * 50;
            prop_assert_eq!(plan(k * u64::from(len), len, MAX_PER_PAGE).len() as u32, n);
        }
    }
}
