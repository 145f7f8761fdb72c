//! Reaping: reading the first log frame since a cutoff, stop or pause (fleet-reaper).
