"""The matcher service: SimHash fingerprints of prompt prefixes, template lookup and learning in Postgres."""
