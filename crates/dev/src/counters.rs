//! [`counters!`](crate::counters): a set of named counters declared once.
//!
//! A hand-written counter set is a live struct of [`Counter`](crate::Counter)s, a plain
//! snapshot struct of `u64`s, a `read` that copies one into the other, a `+=` that sums
//! snapshots and often a table of drop reasons: five lists of the same fields, where a
//! field missing from one of them (a sum that forgets a drop reason) compiles and is
//! wrong. The macro writes them from one list.

/// Declares a set of counters from one list of fields.
///
/// With a live struct (`struct Live;` first): the live struct has one
/// [`Counter`](crate::Counter) per field (single writer, any reader) and `read()`, which
/// copies it into the snapshot. Without one, only the snapshot is declared (for
/// counters one thread owns outright and hands out as copies).
///
/// The snapshot struct has one `pub u64` per field (each field's attributes, its doc
/// included, go on both structs) and derives `Debug, Clone, Copy, Default, PartialEq,
/// Eq`; `+=` sums two field by field; `FIELDS` names every field and `fields()` pairs
/// each name with its count, in declaration order. An optional `drops: [...]` list names
/// the fields that count dropped packets: `drops()` pairs each with its count and
/// `dropped()` sums them.
///
/// ```
/// ibpoll_dev::counters! {
///     /// One lcore's counters.
///     #[repr(C, align(64))]
///     pub struct DemoCounters;
///     /// A copy of [`DemoCounters`].
///     pub struct DemoStats {
///         /// Packets received.
///         rx,
///         /// Packets dropped: no route.
///         no_route,
///         /// Packets dropped: malformed.
///         malformed,
///     }
///     drops: [no_route, malformed]
/// }
///
/// let live = DemoCounters::default();
/// live.rx.add(3);
/// live.malformed.inc();
/// let mut total = live.read();
/// total += live.read();
/// assert_eq!((total.rx, total.dropped()), (6, 2));
/// assert_eq!(DemoStats::FIELDS, ["rx", "no_route", "malformed"]);
/// assert_eq!(total.drops(), [("no_route", 0), ("malformed", 2)]);
/// ```
#[macro_export]
macro_rules! counters {
    (
        $(#[$live_meta:meta])*
        $live_vis:vis struct $Live:ident;
        $(#[$snap_meta:meta])*
        $snap_vis:vis struct $Snap:ident {
            $( $(#[$field_meta:meta])* $field:ident ),+ $(,)?
        }
        $( drops: [ $($drop:ident),+ $(,)? ] )?
    ) => {
        $(#[$live_meta])*
        #[derive(Debug, Default)]
        $live_vis struct $Live {
            $( $(#[$field_meta])* pub $field: $crate::Counter, )+
        }

        impl $Live {
            /// A copy of the counters. Each is read on its own: a copy taken while the
            /// writer runs is not one instant.
            pub fn read(&self) -> $Snap {
                $Snap { $( $field: self.$field.get(), )+ }
            }

            /// Adds what `burst` counted (the writer's per-burst tally) and zeroes it: one
            /// load and store per counter that moved. Only the counters' single writer
            /// may call this.
            #[inline]
            pub fn publish(&self, burst: &mut $Snap) {
                $(
                    if burst.$field != 0 {
                        self.$field.add(burst.$field);
                        burst.$field = 0;
                    }
                )+
            }
        }

        $crate::counters! {
            $(#[$snap_meta])*
            $snap_vis struct $Snap {
                $( $(#[$field_meta])* $field, )+
            }
            $( drops: [ $($drop),+ ] )?
        }
    };
    (
        $(#[$snap_meta:meta])*
        $snap_vis:vis struct $Snap:ident {
            $( $(#[$field_meta:meta])* $field:ident ),+ $(,)?
        }
        $( drops: [ $($drop:ident),+ $(,)? ] )?
    ) => {
        $(#[$snap_meta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        $snap_vis struct $Snap {
            $( $(#[$field_meta])* pub $field: u64, )+
        }

        impl $Snap {
            /// Every field's name, in declaration order.
            pub const FIELDS: [&'static str; $crate::counters!(@count $($field)+)] =
                [$( stringify!($field) ),+];

            /// Every field's name and count, in declaration order.
            pub fn fields(&self) -> [(&'static str, u64); $crate::counters!(@count $($field)+)] {
                [$( (stringify!($field), self.$field) ),+]
            }
        }

        impl ::core::ops::AddAssign for $Snap {
            fn add_assign(&mut self, o: $Snap) {
                $( self.$field += o.$field; )+
            }
        }

        $(
            impl $Snap {
                /// Every drop reason with its count, in a fixed order.
                pub fn drops(&self) -> [(&'static str, u64); $crate::counters!(@count $($drop)+)] {
                    [$( (stringify!($drop), self.$drop) ),+]
                }

                /// Packets dropped, every reason summed.
                pub fn dropped(&self) -> u64 {
                    0 $( + self.$drop )+
                }
            }
        )?
    };
    (@count $($x:ident)+) => {
        <[()]>::len(&[$( $crate::counters!(@unit $x) ),+])
    };
    (@unit $x:ident) => {
        ()
    };
}

#[cfg(test)]
mod tests {
    crate::counters! {
        /// Live.
        pub struct Live;
        /// Snapshot.
        pub struct Snap {
            /// A.
            a,
            /// B, a drop reason.
            b,
            /// C, a drop reason.
            c,
        }
        drops: [b, c]
    }

    crate::counters! {
        /// Snapshot only.
        #[non_exhaustive]
        pub struct Plain {
            /// X.
            x,
            /// Y.
            y
        }
    }

    #[test]
    fn read_sum_and_tables_cover_every_field() {
        let live = Live::default();
        live.a.add(1);
        live.b.add(20);
        live.c.add(300);
        let one = live.read();
        assert_eq!(
            one,
            Snap {
                a: 1,
                b: 20,
                c: 300
            }
        );
        let mut sum = one;
        sum += one;
        assert_eq!(
            sum,
            Snap {
                a: 2,
                b: 40,
                c: 600
            }
        );
        assert_eq!(Snap::FIELDS, ["a", "b", "c"]);
        // A per-burst tally published once: added, and zeroed.
        let mut burst = Snap { a: 5, b: 0, c: 1 };
        live.publish(&mut burst);
        assert_eq!(burst, Snap::default());
        assert_eq!(
            live.read(),
            Snap {
                a: 6,
                b: 20,
                c: 301
            }
        );
        assert_eq!(sum.fields(), [("a", 2), ("b", 40), ("c", 600)]);
        assert_eq!(sum.drops(), [("b", 40), ("c", 600)]);
        assert_eq!(sum.dropped(), 640);
    }

    #[test]
    fn a_snapshot_without_a_live_struct() {
        let mut p = Plain { x: 1, y: 2 };
        p += Plain { x: 10, y: 20 };
        assert_eq!(p.fields(), [("x", 11), ("y", 22)]);
        assert_eq!(Plain::FIELDS.len(), 2);
    }
}
