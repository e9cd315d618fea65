"""The propose-and-aggregate engine: aggregation format, pipeline, backends. No HTTP here."""
