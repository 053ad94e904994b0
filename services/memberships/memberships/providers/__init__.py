"""Payment providers' webhooks (Stripe-style and HelloAsso-style): each verifies its
provider's signature, maps the provider's event to what it means for Tribune (money
captured, refunded or charged back, or nothing) and hands it to the one recording use case
(``MembershipsService.record_payment``) or to the reversal use case (``RefundService``)."""
