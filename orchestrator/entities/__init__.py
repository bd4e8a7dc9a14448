"""Entities said by callers: numbers, times, dates, digit strings, choices, patterns."""
