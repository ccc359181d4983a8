package keys

import (
	"errors"
	"fmt"
	"strings"
)

// FieldError says what is wrong with one field of an input and how to fix it.
// Field uses the admin API's field paths, e.g. "limits[1].amount".
type FieldError struct {
	Field   string
	Message string
}

func (e FieldError) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

// ValidationError collects every field error of one input, so a caller can fix
// them all in one go instead of one per round trip.
type ValidationError struct {
	Fields []FieldError
}

func (e *ValidationError) Error() string {
	msgs := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		msgs[i] = f.Error()
	}
	return "invalid request: " + strings.Join(msgs, "; ")
}

// Add records a field error.
func (e *ValidationError) Add(field, format string, args ...any) {
	e.Fields = append(e.Fields, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

// Merge appends the field errors of err (a *ValidationError) under prefix.
func (e *ValidationError) Merge(err error) {
	var ve *ValidationError
	if errors.As(err, &ve) {
		e.Fields = append(e.Fields, ve.Fields...)
	} else if err != nil {
		e.Add("", "%s", err)
	}
}

// MergeUnder is Merge for the errors of a part of a request: each field path
// gets prefix and a dot ("service" and "base_url" make "service.base_url").
func (e *ValidationError) MergeUnder(prefix string, err error) {
	var ve *ValidationError
	if !errors.As(err, &ve) {
		e.Merge(err)
		return
	}
	for _, f := range ve.Fields {
		if f.Field != "" {
			f.Field = prefix + "." + f.Field
		}
		e.Fields = append(e.Fields, f)
	}
}

// Err returns nil when no field error was recorded.
func (e *ValidationError) Err() error {
	if len(e.Fields) == 0 {
		return nil
	}
	return e
}

// ErrNotFound is returned for a key that does not exist in the caller's account.
// A key of another account is reported the same way, so that callers cannot
// learn which ids exist elsewhere.
var ErrNotFound = errors.New("key not found")

// ConflictError is returned when a key changed between reading and writing it
// (optimistic concurrency on the key's subject in the KEYS stream).
type ConflictError struct {
	KeyID    string
	Expected uint64
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("key %s was changed concurrently (expected revision %d); read it again and retry", e.KeyID, e.Expected)
}

// StateError is returned for a command that the key's state does not allow,
// such as rotating a revoked key.
type StateError struct {
	KeyID  string
	Reason string
}

func (e *StateError) Error() string { return fmt.Sprintf("key %s: %s", e.KeyID, e.Reason) }
