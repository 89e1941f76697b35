//! Panoptes coordinator (being written).
