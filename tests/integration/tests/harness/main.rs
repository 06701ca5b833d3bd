//! Tests of the test harness itself, against real servers: what every other suite stands on.

mod pg_replica;
mod servers;
