//! obd-ext4 (placeholder until the engine lands)
