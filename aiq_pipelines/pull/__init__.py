"""The pull API (option 1 of AIQ's guide): a read-only HTTP service AIQ calls for transactions, customers and
inventory by time range, served from the sync database's staged records (``aiq-pipelines pull-api``)."""
