"""The treasurer's legal and accounting reports: the yearly donor and member list filed
with the CNCCFP, and the ledger of payments and refunds per federation."""
