"""The purchase saga's records and rules, without I/O: the step table (`saga`), purchases and prices
(`purchase`) and what a payment call can answer (`payment`)."""
