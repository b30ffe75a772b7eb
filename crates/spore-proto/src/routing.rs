//! Routing decisions: given a destination, which stream (if any) carries it.
//!
//! The table is pure data; the broker owns the streams it names.

use std::collections::HashMap;

use crate::ContextId;

/// Where a frame goes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHop<S> {
    /// Deliver in this context.
    Local,
    /// Write to this stream (a child's, or the parent's).
    Stream(S),
    /// Nowhere: answer with a dead message.
    NoRoute,
}

/// The routing table of one context. `S` identifies a stream.
#[derive(Debug, Clone)]
pub struct RouteTable<S> {
    my_id: ContextId,
    parent: Option<S>,
    routes: HashMap<ContextId, S>,
}

impl<S: Copy + Eq> RouteTable<S> {
    /// A table for context `my_id` whose parent (if any) is reached by `parent`.
    pub fn new(my_id: ContextId, parent: Option<S>) -> Self {
        Self {
            my_id,
            parent,
            routes: HashMap::new(),
        }
    }

    /// This context's ID.
    pub fn my_id(&self) -> ContextId {
        self.my_id
    }

    /// The stream to the parent, if there is one.
    pub fn parent(&self) -> Option<S> {
        self.parent
    }

    /// The stream `ctx` is reached through, if it is a known descendant.
    pub fn route(&self, ctx: ContextId) -> Option<S> {
        self.routes.get(&ctx).copied()
    }

    /// Decides the next hop for `dst`: local, a known descendant's stream,
    /// else upward to the parent, else no route.
    pub fn next_hop(&self, dst: ContextId) -> NextHop<S> {
        if dst == self.my_id {
            NextHop::Local
        } else if let Some(s) = self.routes.get(&dst) {
            NextHop::Stream(*s)
        } else if let Some(p) = self.parent {
            NextHop::Stream(p)
        } else {
            NextHop::NoRoute
        }
    }

    /// Records that `ctx` is reached through `stream`.
    pub fn add_route(&mut self, ctx: ContextId, stream: S) {
        self.routes.insert(ctx, stream);
    }

    /// Forgets `ctx`; returns whether it was known.
    pub fn del_route(&mut self, ctx: ContextId) -> bool {
        self.routes.remove(&ctx).is_some()
    }

    /// Forgets every context reached through `stream` and returns them.
    pub fn drop_stream(&mut self, stream: S) -> Vec<ContextId> {
        let lost: Vec<ContextId> = self
            .routes
            .iter()
            .filter(|(_, s)| **s == stream)
            .map(|(c, _)| *c)
            .collect();
        for c in &lost {
            self.routes.remove(c);
        }
        if self.parent == Some(stream) {
            self.parent = None;
        }
        lost
    }
}

/// The reason carried by a dead message for an unroutable destination.
pub fn no_route_reason(dst: ContextId, my_id: ContextId) -> String {
    format!("no route to {dst}, my ID is {my_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_local_down_up_and_nowhere() {
        let mut t = RouteTable::new(1, Some('p'));
        t.add_route(5, 'a');
        assert_eq!(t.next_hop(1), NextHop::Local);
        assert_eq!(t.next_hop(5), NextHop::Stream('a'));
        assert_eq!(t.next_hop(0), NextHop::Stream('p'));
        let master: RouteTable<char> = RouteTable::new(0, None);
        assert_eq!(master.next_hop(9), NextHop::NoRoute);
        assert_eq!(no_route_reason(9, 0), "no route to 9, my ID is 0");
    }

    #[test]
    fn dropping_a_stream_forgets_everything_behind_it() {
        let mut t = RouteTable::new(0, None);
        t.add_route(1, 'a');
        t.add_route(2, 'a');
        t.add_route(3, 'b');
        let mut lost = t.drop_stream('a');
        lost.sort();
        assert_eq!(lost, [1, 2]);
        assert_eq!(t.next_hop(1), NextHop::NoRoute);
        assert_eq!(t.next_hop(3), NextHop::Stream('b'));
    }
}
