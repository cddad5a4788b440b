"""Everything ccsa sends to cc-backend: strict request bodies and the async REST client."""
