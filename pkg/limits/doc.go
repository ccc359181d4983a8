// Package limits holds the rules of DESIGN.md section 4 (Limits) in one pure,
// clock-injected place, shared by the edge, which enforces them in memory, and
// by metering, which folds usage into the authoritative balances. Nothing here
// does I/O, starts goroutines, locks or reads the clock: every function takes
// now, and callers serialize the operations on one key.
//
// # Model
//
// A Rule is one limit of a key ({metric, interval, amount, window,
// available_immediately} plus the key's time zone) and a State is what that
// limit remembers between operations. State is a plain value with exported
// fields so metering can keep it in a PostgreSQL row and publish it to the
// edges; Rule's methods compute from a State what is available at any time
// (Available, Status) and the State after usage (Debit), after a change of the
// limit (Reconfigure) or for a limit just added (NewState). The zero State is
// a limit with nothing used.
//
// A Set is all limits of one key with their States and the reservations of
// the requests in flight: the edge asks Reserve before a request goes
// upstream and Settle when it ends; metering calls Debit for each usage event
// and Reconfigure for each key change, at the times the events happened, so
// that a rebuild from the streams gives the same numbers as the live fold.
// The now given to NewSet and Reconfigure is when the limits took effect (the
// key event's time), not when a process learned of them: a limit that started
// empty an hour ago has refilled for an hour when an edge starts.
//
// # Rolling windows
//
// A rolling limit is a bucket of capacity Amount that refills continuously at
// Amount per interval (MONTH is 30 days). Its State is a level measured at a
// time, and
//
//	available(now) = min(Amount, Level + ⌊Amount·(now−At) / interval⌋)
//
// with the product in 128 bits (money.MulDiv) and times in nanoseconds. Usage
// is subtracted from Level without moving At, so the fraction of a unit that
// has refilled so far is never thrown away: the level at a time does not
// depend on how many operations happened in between (a 60-per-minute limit
// used every 0.9 s still refills one request per second). Only when the
// bucket is full is the State moved to (Amount−usage, now); a full bucket
// does not refill, so nothing is lost. A level may go below zero (a request
// can cost more than was left) and then refills from there.
//
// # Calendar windows
//
// A calendar limit sums usage from the start of the current day or month in
// the key's time zone (UTC by default) and starts again from zero at the next
// boundary; its State is the usage and the start of the window it belongs to.
// Days are local calendar days, so one can last 23 or 25 hours around a DST
// change. Calendar MINUTE and HOUR windows, which keys.Validate refuses, would
// follow UTC minutes and hours.
//
// # Rounding and overflow
//
// Rounding never creates money, tokens or requests: refills round down, the
// times until a refill or reset round up, a reservation never exceeds what is
// left, and changing a limit takes what is available at that moment rounded
// down. Sums saturate instead of wrapping; a rolling level saturates at
// Amount − MaxInt64 (about −9.2 billion dollars), far below any real debt.
//
// # Time going backwards
//
// Usage that arrives with a time before the State's (an event folded a little
// out of order, or a clock that stepped back) is charged to the State as it
// is, never dropped and never refunded: a rolling limit treats it as used at
// the State's time, a calendar limit counts it in the State's window.
//
// # Choices where DESIGN.md is silent
//
//   - available_immediately applies to the limits of a new key too: NewSet
//     adds every limit, so a rolling limit without it starts empty at the
//     key's creation time and refills from there.
//   - Reserve reserves one request on REQUESTS limits and Settle debits one,
//     whatever the Usage says: a started request counts even if it failed.
//     Debit counts Usage.Requests, for folds of usage events.
//   - A refused request is told the Retry-After of the limit that frees up
//     last. For a rolling limit that is when the bucket holds one unit more
//     than is reserved, as if the requests in flight spend their whole
//     reservations; when they hold the full amount, 1 s. A limit whose amount
//     is 0 sets Denial.Never instead.
//   - Reservations stay on a limit whose amount or window changes and across
//     a calendar reset; they vanish with a removed limit, and a limit added
//     again later does not release the earlier reservations.
//   - A limit that changes window carries over what is available (to rolling)
//     or what is used (to calendar); a key that changes time zone keeps the
//     usage of its calendar limits in the window the new zone is in.
//   - x-ratelimit-* headers have room for one limit per metric: Tightest
//     picks the one with the least remaining.
package limits
