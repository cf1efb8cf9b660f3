//! Retained messages indexed by topic name, so a SUBSCRIBE with a wildcard filter finds
//! its retained messages without scanning every retained topic.

pub struct RetainedTree<V> {
    _marker: std::marker::PhantomData<V>,
}

impl<V> Default for RetainedTree<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> RetainedTree<V> {
    pub fn new() -> Self {
        todo!("topic")
    }

    /// Stores `value` under `topic`, returning the value it replaces.
    pub fn insert(&mut self, topic: &str, value: V) -> Option<V> {
        let _ = (topic, value);
        todo!("topic")
    }

    /// Removes the value under `topic`; prunes nodes left empty.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        let _ = topic;
        todo!("topic")
    }

    pub fn get(&self, topic: &str) -> Option<&V> {
        let _ = topic;
        todo!("topic")
    }

    /// Calls `visit` for every stored topic matching `filter` (a plain filter; `$` topics
    /// are not matched by a filter starting with a wildcard).
    pub fn for_each_matching<'a>(&'a self, filter: &str, visit: impl FnMut(&'a V)) {
        let _ = (filter, visit);
        todo!("topic")
    }

    pub fn len(&self) -> usize {
        todo!("topic")
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
