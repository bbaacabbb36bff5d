//! Our mainline DHT node (BEP 5, 42, 43, 44). Being built: see issue 2.
