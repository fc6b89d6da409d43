"""One router per CBR resource family; handlers validate, call a service, shape the answer."""
