"""Wire models (Pydantic), named and shaped exactly as CBR's; converters from db models."""
