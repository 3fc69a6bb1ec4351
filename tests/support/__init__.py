"""Shared test code: throwaway servers, the API helpers and event generators."""
