//! A value replaced on reload and read on the hot path: readers keep a cached `Arc` and re-read
//! only when the generation (one relaxed atomic load) moved.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

#[derive(Debug)]
pub struct Live<T> {
    generation: AtomicU64,
    value: RwLock<Arc<T>>,
}

impl<T> Live<T> {
    pub fn new(v: T) -> Self {
        Live { generation: AtomicU64::new(0), value: RwLock::new(Arc::new(v)) }
    }

    pub fn get(&self) -> Arc<T> {
        self.value.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, v: T) {
        *self.value.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(v);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// A reader-side cache.
    pub fn cached(&self) -> Cached<T> {
        let generation = self.generation.load(Ordering::Acquire);
        Cached { generation, value: self.get() }
    }

    /// Refresh `c` if the value changed since it was read.
    pub fn refresh<'a>(&self, c: &'a mut Cached<T>) -> &'a Arc<T> {
        let g = self.generation.load(Ordering::Acquire);
        if g != c.generation {
            c.generation = g;
            c.value = self.get();
        }
        &c.value
    }
}

#[derive(Debug)]
pub struct Cached<T> {
    generation: u64,
    value: Arc<T>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_follows_updates() {
        let l = Live::new(1);
        let mut c = l.cached();
        assert_eq!(**l.refresh(&mut c), 1);
        l.set(2);
        assert_eq!(**l.refresh(&mut c), 2);
    }
}
