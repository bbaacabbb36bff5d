//! Magnet links (BEP 9) and BEP 46 mutable URLs. Being built.
