"""What happens to counted usage: periods closing into statements, late events, cancels, the journal."""
