// The upstream's own queue: a request that finds every slot of its pool busy waits at a host (its
// listen backlog or worker queue) and answers late; each serving host holds at most
// `backlog_per_host` of them, and past that bound the pool refuses at once, as a full backlog does.

/// True when a request that finds no free slot must be refused: no host serves, or `waiting`
/// already fill the backlog of the `serving` hosts. No bound (`None`): it waits for a host, up to
/// the pool's `timeout`.
pub fn full(backlog_per_host: Option<u64>, waiting: usize, serving: u64) -> bool {
    if serving == 0 {
        return true;
    }
    match backlog_per_host {
        None => false,
        Some(per_host) => waiting as u64 >= per_host.saturating_mul(serving),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_is_per_serving_host() {
        assert!(!full(None, 1_000_000, 1), "no bound: requests wait for a host");
        assert!(full(None, 0, 0), "unless no host serves at all");
        assert!(!full(Some(5), 19, 4));
        assert!(full(Some(5), 20, 4));
        assert!(full(Some(5), 0, 0), "no host serves: nothing can wait");
        assert!(full(Some(0), 0, 4), "no backlog: refused the moment every slot is busy");
    }
}
