"""Tax receipts (reçus fiscaux): gap-free yearly numbering, issue on payment-received,
cancellation and reissue with an audit trail, PDF rendering."""
