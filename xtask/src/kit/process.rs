//! Child processes of the tests, benches, soak and demo (filled in next).
