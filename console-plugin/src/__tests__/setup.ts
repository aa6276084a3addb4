import { configure } from '@testing-library/react';

// The console's convention for test ids (data-test), the one the components use.
configure({ testIdAttribute: 'data-test' });
