//! Info dictionaries (BEP 3, BEP 47). Being built.
