"""The HTTP contract (API.md): handlers from request data to responses, independent of the Functions runtime."""
