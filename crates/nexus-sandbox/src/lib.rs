//! Isolation mechanics of the bwrap driver.
